//! Qwen2 / Qwen2.5: Llama with biases on the Q, K and V projections.
//! GGUF `qwen2`, `Qwen2ForCausalLM`.

use super::{json_field, Family, Forward};
use crate::config::{GgufMeta, ModelConfig, RopeStyle};
use crate::error::Result;

/// The Qwen2 family.
pub static FAMILY: Family = Family {
    name: "qwen2",
    gguf_names: &["qwen2"],
    hf_names: &["Qwen2ForCausalLM"],
    gguf_rope_style: RopeStyle::Halves,
    from_gguf: gguf_fields,
    from_hf: hf_fields,
    layer_tensors: &[],
    forward: Forward::Decoder,
};

fn gguf_fields(c: &mut ModelConfig, _: &GgufMeta) -> Result<()> {
    c.qkv_bias = true;
    Ok(())
}

fn hf_fields(c: &mut ModelConfig, json: &serde_json::Value) -> std::result::Result<(), String> {
    c.qkv_bias = true;
    qwen_window(c, json)
}

/// Qwen configs carry a window but use it only when `use_sliding_window` is set.
pub(super) fn qwen_window(
    c: &mut ModelConfig,
    json: &serde_json::Value,
) -> std::result::Result<(), String> {
    if !json_field::<bool>(json, "use_sliding_window")?.unwrap_or(false) {
        c.sliding_window = None;
    }
    Ok(())
}
