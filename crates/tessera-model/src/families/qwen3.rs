//! Qwen3: Llama with RMSNorm on each head of Q and K before the rotation.
//! GGUF `qwen3`, `Qwen3ForCausalLM`.

use super::{Family, Forward};
use crate::config::{GgufMeta, ModelConfig, RopeStyle};
use crate::error::Result;

/// The Qwen3 family.
pub static FAMILY: Family = Family {
    name: "qwen3",
    gguf_names: &["qwen3"],
    hf_names: &["Qwen3ForCausalLM"],
    gguf_rope_style: RopeStyle::Halves,
    from_gguf: gguf_fields,
    from_hf: hf_fields,
    layer_tensors: &[],
    forward: Forward::Decoder,
};

fn gguf_fields(c: &mut ModelConfig, _: &GgufMeta) -> Result<()> {
    c.qk_norm = true;
    Ok(())
}

fn hf_fields(c: &mut ModelConfig, json: &serde_json::Value) -> std::result::Result<(), String> {
    c.qk_norm = true;
    super::qwen2::qwen_window(c, json)
}
