//! Gemma 3 (text): Gemma 2 without attention soft-capping, with RMSNorm on
//! each head of Q and K, five sliding-window layers to one global layer
//! (`sliding_window_pattern`), the sliding layers rotating with their own
//! unscaled base (`rope_local_base_freq`, 10 000) and the global ones with
//! `rope_theta` and its `rope_scaling`. GGUF `gemma3`, `Gemma3ForCausalLM`
//! (the multimodal `Gemma3ForConditionalGeneration` is not supported).

use super::gemma2::{gemma_gguf, gemma_hf, GEMMA_LAYER_TENSORS};
use super::{json_field, Family, Forward};
use crate::config::{GgufMeta, ModelConfig, RopeScaling, RopeStyle};
use crate::error::Result;

/// The Gemma 3 family.
pub static FAMILY: Family = Family {
    name: "gemma3",
    gguf_names: &["gemma3"],
    hf_names: &["Gemma3ForCausalLM"],
    gguf_rope_style: RopeStyle::Halves,
    from_gguf: gguf_fields,
    from_hf: hf_fields,
    layer_tensors: GEMMA_LAYER_TENSORS,
    forward: Forward::Decoder,
};

/// llama.cpp's base for the sliding layers, which GGUF does not carry.
const LOCAL_ROPE_BASE: f32 = 10_000.0;

fn gguf_fields(c: &mut ModelConfig, meta: &GgufMeta) -> Result<()> {
    // llama.cpp: a global layer every sixth, the 27B model has 62 layers.
    gemma_gguf(c, meta, 6, 62)?;
    c.qk_norm = true;
    c.rope_local_theta = Some(LOCAL_ROPE_BASE);
    match meta.opt_string(&meta.key("rope.scaling.type"))? {
        None | Some("none") => {}
        Some("linear") => {
            let factor = meta.f32(&meta.key("rope.scaling.factor"))?;
            if !(factor.is_finite() && factor > 0.0) {
                return Err(meta.error(format!("rope scaling factor {factor} must be positive")));
            }
            c.rope_scaling = Some(RopeScaling::Linear { factor });
        }
        Some(other) => {
            return Err(meta.error(format!("unsupported rope scaling type '{other}'")));
        }
    }
    Ok(())
}

fn hf_fields(c: &mut ModelConfig, json: &serde_json::Value) -> std::result::Result<(), String> {
    gemma_hf(c, json, 6)?;
    c.qk_norm = true;
    c.rope_local_theta = Some(json_field(json, "rope_local_base_freq")?.unwrap_or(LOCAL_ROPE_BASE));
    if json_field::<f32>(json, "attn_logit_softcapping")?.is_some() {
        return Err("attn_logit_softcapping is not part of Gemma 3".into());
    }
    Ok(())
}
