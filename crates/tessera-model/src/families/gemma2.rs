//! Gemma 2: GeGLU MLP (GELU's tanh approximation), RMSNorm gains of `1 + w`,
//! a norm before and after both attention and MLP, embeddings scaled by
//! `sqrt(hidden)`, attention scores and logits soft-capped, scores scaled by
//! `query_pre_attn_scalar`, sliding-window and global layers alternating
//! (layer 0 slides), tied embeddings. GGUF `gemma2`, `Gemma2ForCausalLM`.
//! The helpers here are Gemma 3's too ([`super::gemma3`]).

use super::{gguf_f32, json_field, json_or, Family, Forward};
use crate::config::{Activation, GgufMeta, ModelConfig, RopeStyle, SlidingLayers};
use crate::error::Result;

/// The Gemma 2 family.
pub static FAMILY: Family = Family {
    name: "gemma2",
    gguf_names: &["gemma2"],
    hf_names: &["Gemma2ForCausalLM"],
    gguf_rope_style: RopeStyle::Halves,
    from_gguf: gguf_fields,
    from_hf: hf_fields,
    layer_tensors: GEMMA_LAYER_TENSORS,
    forward: Forward::Decoder,
};

/// Gemma's four norms per layer: Hugging Face's `post_attention_layernorm`
/// is a norm of the attention output here, not Llama's pre-MLP norm.
pub(super) const GEMMA_LAYER_TENSORS: &[(&str, &str)] = &[
    (
        "post_attention_layernorm.weight",
        "post_attention_norm.weight",
    ),
    ("pre_feedforward_layernorm.weight", "ffn_norm.weight"),
    ("post_feedforward_layernorm.weight", "post_ffw_norm.weight"),
];

fn gguf_fields(c: &mut ModelConfig, meta: &GgufMeta) -> Result<()> {
    gemma_gguf(c, meta, 2, 46)?;
    c.attn_logit_softcap = gguf_f32(meta, "attn_logit_softcapping")?;
    Ok(())
}

fn hf_fields(c: &mut ModelConfig, json: &serde_json::Value) -> std::result::Result<(), String> {
    gemma_hf(c, json, 2)?;
    // Gemma2Config's defaults, for a config.json that leaves them out.
    c.attn_logit_softcap = json_or(json, "attn_logit_softcapping", 50.0)?;
    c.final_logit_softcap = json_or(json, "final_logit_softcapping", 30.0)?;
    Ok(())
}

/// What Gemma 2 and 3 GGUF files share. llama.cpp's converter stores the
/// norm gains as `1 + w` already and writes no `query_pre_attn_scalar`:
/// llama.cpp scales by `hidden / heads` for the 27B model (`layers_27b`
/// layers) and by `head_dim` otherwise, and so does tessera.
pub(super) fn gemma_gguf(
    c: &mut ModelConfig,
    meta: &GgufMeta,
    global_every: usize,
    layers_27b: usize,
) -> Result<()> {
    gemma_common(c, global_every);
    c.embedding_scale = Some((c.hidden_size as f32).sqrt());
    c.final_logit_softcap = gguf_f32(meta, "final_logit_softcapping")?;
    c.sliding_window = meta.opt_usize(&meta.key("attention.sliding_window"))?;
    if c.num_layers == layers_27b {
        c.query_pre_attn_scalar = Some((c.hidden_size / c.num_heads.max(1)) as f32);
    }
    Ok(())
}

/// What Gemma 2 and 3 config.json files share.
pub(super) fn gemma_hf(
    c: &mut ModelConfig,
    json: &serde_json::Value,
    default_global_every: usize,
) -> std::result::Result<(), String> {
    let pattern = json_field(json, "sliding_window_pattern")?.unwrap_or(default_global_every);
    gemma_common(c, pattern);
    let activation: Option<String> = match json_field(json, "hidden_activation")? {
        Some(a) => Some(a),
        None => json_field(json, "hidden_act")?,
    };
    match activation.as_deref() {
        None | Some("gelu_pytorch_tanh") => {}
        Some(other) => {
            return Err(format!(
                "hidden_activation '{other}' is not supported (Gemma runs gelu_pytorch_tanh)"
            ))
        }
    }
    if let Some(types) = json_field::<Vec<String>>(json, "layer_types")? {
        let mut sliding = Vec::with_capacity(types.len());
        for t in &types {
            sliding.push(match t.as_str() {
                "sliding_attention" => true,
                "full_attention" => false,
                other => return Err(format!("unknown layer type '{other}' in layer_types")),
            });
        }
        c.sliding_layers = SlidingLayers::PerLayer(sliding);
    }
    // Hugging Face's norms compute `x * (1 + w)` from the stored `w`.
    c.norm_gain_offset = 1.0;
    c.tie_word_embeddings = json_field(json, "tie_word_embeddings")?.unwrap_or(true);
    c.final_logit_softcap = json_field(json, "final_logit_softcapping")?;
    c.query_pre_attn_scalar = json_or(json, "query_pre_attn_scalar", 256.0)?;
    if json.get("sliding_window").is_none() {
        c.sliding_window = Some(4096);
    }
    // The reference multiplies by `sqrt(hidden)` as a tensor of the model's
    // dtype, so a bf16 checkpoint scales by the bf16 rounding of the root.
    let root = (c.hidden_size as f32).sqrt();
    c.embedding_scale = Some(
        match json_field::<String>(json, "torch_dtype")?.as_deref() {
            Some("bfloat16") => half::bf16::from_f32(root).to_f32(),
            Some("float16") => half::f16::from_f32(root).to_f32(),
            _ => root,
        },
    );
    Ok(())
}

fn gemma_common(c: &mut ModelConfig, global_every: usize) {
    c.activation = Activation::GeluTanh;
    c.sandwich_norms = true;
    c.sliding_layers = SlidingLayers::GlobalEvery(global_every);
}
