//! Phi-3: Llama with Q|K|V and gate|up each stored as one fused matrix.
//! GGUF `phi3` (the fused gate|up under `ffn_up`), `Phi3ForCausalLM`.

use super::{Family, Forward};
use crate::config::{GgufMeta, ModelConfig, RopeStyle};
use crate::error::Result;

/// The Phi-3 family.
pub static FAMILY: Family = Family {
    name: "phi3",
    gguf_names: &["phi3"],
    hf_names: &["Phi3ForCausalLM"],
    gguf_rope_style: RopeStyle::Halves,
    from_gguf: gguf_fields,
    from_hf: hf_fields,
    layer_tensors: &[
        ("self_attn.qkv_proj.weight", "attn_qkv.weight"),
        ("mlp.gate_up_proj.weight", "ffn_up.weight"),
    ],
    forward: Forward::Decoder,
};

fn gguf_fields(c: &mut ModelConfig, _: &GgufMeta) -> Result<()> {
    c.fused_projections = true;
    Ok(())
}

fn hf_fields(c: &mut ModelConfig, _: &serde_json::Value) -> std::result::Result<(), String> {
    c.fused_projections = true;
    Ok(())
}
