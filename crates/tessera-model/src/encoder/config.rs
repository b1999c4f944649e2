//! An encoder's configuration: config.json (the network) plus the
//! sentence-transformers files beside it (how token states become one vector).

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{ModelError, Result};

/// How a sequence's last hidden states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over the sequence's tokens.
    Mean,
    /// The first token's state (BERT's `[CLS]`).
    Cls,
    /// The last token's state (decoders used as embedders).
    LastToken,
}

/// A BERT-style encoder's shape and its sentence-embedding head.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub layer_norm_eps: f32,
    /// Rows of the token type table (segment A is row 0).
    pub type_vocab_size: usize,
    /// Positions the model was trained with (`max_position_embeddings`).
    pub trained_context_len: usize,
    /// Longest input served: sentence-transformers' `max_seq_length` when the
    /// directory has one, else the trained context.
    pub max_model_len: usize,
    pub pooling: Pooling,
    /// Whether the pooled vector is scaled to unit length (a `Normalize`
    /// module in modules.json).
    pub normalize: bool,
    /// Whether the model was trained for truncated outputs (Matryoshka),
    /// which is what makes a request's `dimensions` meaningful.
    pub matryoshka: bool,
}

/// config.json's fields that matter here.
#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f32,
    #[serde(default = "default_types")]
    type_vocab_size: usize,
    max_position_embeddings: usize,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    position_embedding_type: Option<String>,
    #[serde(default)]
    is_matryoshka: bool,
    #[serde(default)]
    matryoshka_dimensions: Option<Vec<usize>>,
}

fn default_eps() -> f32 {
    1e-12
}

fn default_types() -> usize {
    2
}

/// The encoder families tessera runs, by config.json's `model_type`.
pub const ENCODER_MODEL_TYPES: &[&str] = &["bert"];

/// Whether `dir`'s config.json describes an encoder (an embedding model).
pub fn is_encoder_dir(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("config.json")) else {
        return false;
    };
    let Ok(json) = serde_json::from_str::<Value>(&text) else {
        return false;
    };
    json.get("model_type")
        .and_then(Value::as_str)
        .is_some_and(|t| ENCODER_MODEL_TYPES.contains(&t))
}

impl EncoderConfig {
    /// Reads config.json and the sentence-transformers files of `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
        let raw: RawConfig = serde_json::from_str(&text)
            .map_err(|e| ModelError::format(&path, format!("not a BERT config.json: {e}")))?;
        let model_type = raw.model_type.as_deref().unwrap_or("");
        if !ENCODER_MODEL_TYPES.contains(&model_type) {
            return Err(ModelError::UnknownArchitecture {
                path,
                arch: model_type.to_string(),
                supported: ENCODER_MODEL_TYPES.join(", "),
            });
        }
        let act = raw.hidden_act.as_deref().unwrap_or("gelu");
        if act != "gelu" {
            return Err(ModelError::format(
                &path,
                format!("hidden_act '{act}' is not supported (only 'gelu', the erf form)"),
            ));
        }
        let positions = raw.position_embedding_type.as_deref().unwrap_or("absolute");
        if positions != "absolute" {
            return Err(ModelError::format(
                &path,
                format!("position_embedding_type '{positions}' is not supported (only 'absolute')"),
            ));
        }
        if raw.num_attention_heads == 0 || !raw.hidden_size.is_multiple_of(raw.num_attention_heads)
        {
            return Err(ModelError::format(
                &path,
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    raw.hidden_size, raw.num_attention_heads
                ),
            ));
        }
        if raw.type_vocab_size == 0 || raw.max_position_embeddings == 0 {
            return Err(ModelError::format(
                &path,
                "type_vocab_size and max_position_embeddings must be positive",
            ));
        }
        let (pooling, normalize) = sentence_pooling(dir)?.unwrap_or((Pooling::Cls, true));
        let max_seq = read_json(&dir.join("sentence_bert_config.json"))?
            .and_then(|j| j.get("max_seq_length").and_then(Value::as_u64))
            .map(|n| n as usize);
        let trained = raw.max_position_embeddings;
        Ok(Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            layer_norm_eps: raw.layer_norm_eps,
            type_vocab_size: raw.type_vocab_size,
            trained_context_len: trained,
            max_model_len: max_seq.unwrap_or(trained).clamp(1, trained),
            pooling,
            normalize,
            matryoshka: raw.is_matryoshka || raw.matryoshka_dimensions.is_some(),
        })
    }

    /// Size of each attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
}

/// How a sequence's hidden states become its vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingHead {
    pub pooling: Pooling,
    /// Scale the pooled vector to unit length.
    pub normalize: bool,
}

/// The embedding head of a decoder directory that is a sentence-transformers
/// model (modules.json with a Pooling module, e.g. Qwen3-Embedding), with
/// whether config.json marks it Matryoshka; `None` for a plain decoder.
pub fn decoder_embedding_head(dir: &Path) -> Result<Option<(EmbeddingHead, bool)>> {
    let Some((pooling, normalize)) = sentence_pooling(dir)? else {
        return Ok(None);
    };
    let config = read_json(&dir.join("config.json"))?.unwrap_or(Value::Null);
    let matryoshka = config.get("is_matryoshka").and_then(Value::as_bool) == Some(true)
        || config
            .get("matryoshka_dimensions")
            .is_some_and(|v| !v.is_null());
    Ok(Some((EmbeddingHead { pooling, normalize }, matryoshka)))
}

/// Pooling and normalization from modules.json and the pooling module's
/// config; `None` without a Pooling module (a plain BERT then pools the
/// `[CLS]` state, normalized, as vLLM does).
fn sentence_pooling(dir: &Path) -> Result<Option<(Pooling, bool)>> {
    let Some(modules) = read_json(&dir.join("modules.json"))? else {
        return Ok(None);
    };
    let modules = modules.as_array().cloned().unwrap_or_default();
    let of_type = |suffix: &str| {
        modules.iter().find(|m| {
            m.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with(suffix))
        })
    };
    let normalize = of_type(".Normalize").is_some();
    let Some(pool) = of_type(".Pooling") else {
        return Ok(None);
    };
    let sub = pool.get("path").and_then(Value::as_str).unwrap_or("");
    let path = dir.join(sub).join("config.json");
    let config = read_json(&path)?.ok_or_else(|| {
        ModelError::format(
            &path,
            "modules.json names a pooling module without its config.json",
        )
    })?;
    let on = |key: &str| config.get(key).and_then(Value::as_bool).unwrap_or(false);
    for unsupported in [
        "pooling_mode_max_tokens",
        "pooling_mode_mean_sqrt_len_tokens",
        "pooling_mode_weightedmean_tokens",
    ] {
        if on(unsupported) {
            return Err(ModelError::format(
                &path,
                format!("{unsupported} is not supported (mean, CLS or last-token pooling only)"),
            ));
        }
    }
    let modes: Vec<Pooling> = [
        ("pooling_mode_mean_tokens", Pooling::Mean),
        ("pooling_mode_cls_token", Pooling::Cls),
        ("pooling_mode_lasttoken", Pooling::LastToken),
    ]
    .into_iter()
    .filter(|(key, _)| on(key))
    .map(|(_, mode)| mode)
    .collect();
    match modes[..] {
        [mode] => Ok(Some((mode, normalize))),
        _ => Err(ModelError::format(
            &path,
            "exactly one pooling mode must be set (mean, CLS or last token)",
        )),
    }
}

/// A JSON file, or `None` when it does not exist.
fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ModelError::format(path, format!("invalid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ModelError::io(path, e)),
    }
}
