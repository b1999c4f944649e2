//! The model families tessera runs, one module each, and the registry the
//! loader looks them up in.
//!
//! A family module holds what sets it apart: the names it goes by (GGUF
//! `general.architecture`, Hugging Face `architectures`), how its own config
//! fields are read from GGUF metadata and from `config.json`, and the layer
//! tensors whose Hugging Face names differ from Llama's. Every family so far
//! is a decoder of Llama's shape with switches ([`crate::config::ModelConfig`]'s
//! `qk_norm`, `sandwich_norms`, `activation`, soft-caps, ...), so they share one
//! forward, [`decoder::DecoderModel`], written once over [`Backend`]
//! operations for every backend. A family whose forward differs would add
//! its own [`CausalLm`] and a [`Forward`] variant naming it.
//!
//! Adding a family: a module here with its `FAMILY`, a line in [`REGISTRY`],
//! and a test against a reference implementation (`tests/families.rs`).

pub mod decoder;
mod gemma2;
mod gemma3;
mod llama;
mod phi3;
mod qwen2;
mod qwen3;

use crate::backend::Backend;
use crate::batch::FlatBatch;
use crate::config::{GgufMeta, ModelConfig, RopeStyle};
use crate::error::Result;

/// Every family tessera runs. The order is the order of error messages.
pub static REGISTRY: &[&Family] = &[
    &llama::FAMILY,
    &qwen2::FAMILY,
    &qwen3::FAMILY,
    &phi3::FAMILY,
    &gemma2::FAMILY,
    &gemma3::FAMILY,
];

/// Which forward a family runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// [`decoder::DecoderModel`]: Llama's graph and its switches.
    Decoder,
}

/// One model family: its names, config fields and tensor names.
pub struct Family {
    /// A short name for logs and errors.
    pub name: &'static str,
    /// `general.architecture` values of its GGUF files.
    pub gguf_names: &'static [&'static str],
    /// `architectures` values of its config.json.
    pub hf_names: &'static [&'static str],
    /// How its GGUF files pair rotary dimensions (Hugging Face checkpoints
    /// always rotate halves).
    pub gguf_rope_style: RopeStyle,
    /// Sets the family's own fields from GGUF metadata, over the common ones.
    pub from_gguf: fn(&mut ModelConfig, &GgufMeta) -> Result<()>,
    /// Sets the family's own fields from config.json, over the common ones.
    pub from_hf: fn(&mut ModelConfig, &serde_json::Value) -> std::result::Result<(), String>,
    /// Hugging Face names of layer tensors (after `model.layers.N.`) that
    /// differ from Llama's, with their GGUF names (after `blk.N.`); looked
    /// up before Llama's table.
    pub layer_tensors: &'static [(&'static str, &'static str)],
    /// The forward it runs.
    pub forward: Forward,
}

impl std::fmt::Debug for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Family({})", self.name)
    }
}

impl PartialEq for Family {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// The family of a GGUF `general.architecture`.
pub fn by_gguf_name(name: &str) -> Option<&'static Family> {
    REGISTRY
        .iter()
        .copied()
        .find(|f| f.gguf_names.contains(&name))
}

/// The family of a config.json `architectures` entry.
pub fn by_hf_name(name: &str) -> Option<&'static Family> {
    REGISTRY
        .iter()
        .copied()
        .find(|f| f.hf_names.contains(&name))
}

/// The GGUF architectures tessera runs, for errors.
pub fn supported_gguf() -> String {
    REGISTRY
        .iter()
        .flat_map(|f| f.gguf_names.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The Hugging Face architectures tessera runs, for errors.
pub fn supported_hf() -> String {
    REGISTRY
        .iter()
        .flat_map(|f| f.hf_names.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A causal language model on a backend: what the runner drives.
pub trait CausalLm<B: Backend>: Send + Sync {
    /// Its configuration.
    fn config(&self) -> &ModelConfig;

    /// Runs the batch: writes its K/V into `cache` and returns every new
    /// token's last hidden state after the final norm, `[tokens, hidden]`
    /// (what the LM head reads; what an embedder pools).
    fn final_hidden(&self, b: &B, cache: &mut B::KvCache, batch: &FlatBatch) -> Result<B::Tensor>;

    /// The logits of final hidden states, `[rows, vocab]`.
    fn logits(&self, b: &B, hidden: &B::Tensor) -> Result<B::Tensor>;

    /// Runs the batch: writes its K/V into `cache` and returns the logits of
    /// the rows in `batch.logit_rows`, `[rows, vocab]`.
    fn forward(&self, b: &B, cache: &mut B::KvCache, batch: &FlatBatch) -> Result<B::Tensor> {
        let x = self.final_hidden(b, cache, batch)?;
        let last = b.gather_rows(&x, &batch.logit_rows)?;
        self.logits(b, &last)
    }
}

/// Reads a GGUF key, if present, as a float.
fn gguf_f32(meta: &GgufMeta, key: &str) -> Result<Option<f32>> {
    meta.opt_f32(&meta.key(key))
}

/// A JSON field, if present and not null, deserialized.
fn json_field<T: serde::de::DeserializeOwned>(
    json: &serde_json::Value,
    key: &str,
) -> std::result::Result<Option<T>, String> {
    match json.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| format!("config.json '{key}': {e}")),
    }
}

/// A JSON field: `default` when absent (the reference config class's
/// default, which `save_pretrained` may leave out), `None` when null.
fn json_or<T: serde::de::DeserializeOwned>(
    json: &serde_json::Value,
    key: &str,
    default: T,
) -> std::result::Result<Option<T>, String> {
    match json.get(key) {
        None => Ok(Some(default)),
        Some(_) => json_field(json, key),
    }
}
