//! [`ModelConfig`] from a Hugging Face `config.json`: the fields every family
//! shares, then the family's own ([`crate::families::Family::from_hf`]).

use std::path::Path;

use serde::Deserialize;

use super::{ModelConfig, RopeScaling, RopeStyle};
use crate::error::{ModelError, Result};
use crate::families;

impl ModelConfig {
    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_json(path: &Path, text: &str) -> Result<Self> {
        let invalid =
            |e: serde_json::Error| ModelError::format(path, format!("invalid config.json: {e}"));
        let json: serde_json::Value = serde_json::from_str(text).map_err(invalid)?;
        let raw = HfConfig::deserialize(&json).map_err(invalid)?;
        let arch_name = raw
            .architectures
            .as_ref()
            .and_then(|a| a.first())
            .ok_or_else(|| ModelError::format(path, "config.json has no 'architectures'"))?;
        let family =
            families::by_hf_name(arch_name).ok_or_else(|| ModelError::UnknownArchitecture {
                path: path.to_path_buf(),
                arch: arch_name.clone(),
                supported: families::supported_hf(),
            })?;
        let context_len = raw.max_position_embeddings.unwrap_or(4096);
        let mut c = ModelConfig::base(family, RopeStyle::Halves);
        c.hidden_size = raw.hidden_size;
        c.intermediate_size = raw.intermediate_size;
        c.num_layers = raw.num_hidden_layers;
        c.num_heads = raw.num_attention_heads;
        c.num_kv_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        c.head_dim = raw
            .head_dim
            .unwrap_or(raw.hidden_size / raw.num_attention_heads.max(1));
        c.vocab_size = raw.vocab_size;
        c.rms_norm_eps = raw.rms_norm_eps;
        c.rope_theta = raw.rope_theta.unwrap_or(10_000.0);
        c.rope_scaling = rope_scaling(path, raw.rope_scaling.as_ref())?;
        c.trained_context_len = context_len;
        c.max_model_len = context_len;
        c.sliding_window = raw.sliding_window;
        c.qkv_bias = raw.attention_bias;
        c.tie_word_embeddings = raw.tie_word_embeddings;
        (family.from_hf)(&mut c, &json).map_err(|e| ModelError::format(path, e))?;
        c.validate(path)?;
        Ok(c)
    }
}

/// `rope_scaling` of config.json: Llama 3.1's, linear, or none.
fn rope_scaling(path: &Path, v: Option<&serde_json::Value>) -> Result<Option<RopeScaling>> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("");
    let bad = |e: serde_json::Error| {
        ModelError::format(path, format!("invalid {kind} rope_scaling: {e}"))
    };
    match kind {
        "llama3" => Ok(Some(RopeScaling::Llama3(
            serde_json::from_value(v.clone()).map_err(bad)?,
        ))),
        "linear" => {
            #[derive(Deserialize)]
            struct Linear {
                factor: f32,
            }
            let l: Linear = serde_json::from_value(v.clone()).map_err(bad)?;
            if !(l.factor.is_finite() && l.factor > 0.0) {
                return Err(ModelError::format(
                    path,
                    format!("linear rope_scaling factor {} must be positive", l.factor),
                ));
            }
            Ok(Some(RopeScaling::Linear { factor: l.factor }))
        }
        "default" => Ok(None),
        other => Err(ModelError::format(
            path,
            format!("unsupported rope_scaling type '{other}'"),
        )),
    }
}

/// The fields of `config.json` every family shares.
#[derive(Debug, Deserialize)]
struct HfConfig {
    architectures: Option<Vec<String>>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    rms_norm_eps: f32,
    rope_theta: Option<f32>,
    rope_scaling: Option<serde_json::Value>,
    max_position_embeddings: Option<usize>,
    sliding_window: Option<usize>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    tie_word_embeddings: bool,
}
