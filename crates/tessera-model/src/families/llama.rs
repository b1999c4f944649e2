//! Llama 1/2/3 (3.1 rope scaling), SmolLM2, Mistral: the graph every other
//! family switches. GGUF `llama` (Q/K permuted by llama.cpp's converter, so
//! rotary pairs interleave), `LlamaForCausalLM`, `MistralForCausalLM` (its
//! `sliding_window` applies to every layer).

use super::{Family, Forward};
use crate::config::{GgufMeta, ModelConfig, RopeStyle};
use crate::error::Result;

/// The Llama family.
pub static FAMILY: Family = Family {
    name: "llama",
    gguf_names: &["llama"],
    hf_names: &["LlamaForCausalLM", "MistralForCausalLM"],
    gguf_rope_style: RopeStyle::Interleaved,
    from_gguf: no_gguf_fields,
    from_hf: no_hf_fields,
    layer_tensors: &[],
    forward: Forward::Decoder,
};

/// A family whose GGUF metadata holds nothing beyond the common keys.
pub(super) fn no_gguf_fields(_: &mut ModelConfig, _: &GgufMeta) -> Result<()> {
    Ok(())
}

/// A family whose config.json holds nothing beyond the common fields.
pub(super) fn no_hf_fields(
    _: &mut ModelConfig,
    _: &serde_json::Value,
) -> std::result::Result<(), String> {
    Ok(())
}
