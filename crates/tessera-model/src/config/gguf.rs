//! [`ModelConfig`] from GGUF metadata: the keys every family shares, then the
//! family's own ([`crate::families::Family::from_gguf`]).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;

use super::ModelConfig;
use crate::error::{ModelError, Result};
use crate::families;

impl ModelConfig {
    /// Reads the configuration from GGUF metadata. `path` is only used in errors.
    pub fn from_gguf(path: &Path, md: &HashMap<String, Value>) -> Result<Self> {
        let meta = GgufMeta { path, md };
        let arch_name = meta.string("general.architecture")?;
        let family =
            families::by_gguf_name(arch_name).ok_or_else(|| ModelError::UnknownArchitecture {
                path: path.to_path_buf(),
                arch: arch_name.to_string(),
                supported: families::supported_gguf(),
            })?;
        // Mixtral and other MoE GGUFs reuse a dense architecture's name.
        if let Some(experts) = meta
            .opt_usize(&meta.key("expert_count"))?
            .filter(|&n| n > 0)
        {
            return Err(ModelError::format(
                path,
                format!(
                    "a mixture of experts ({experts} experts, `{}`) is not supported: tessera \
                     runs dense {arch_name} models only",
                    meta.key("expert_count")
                ),
            ));
        }
        let mut c = ModelConfig::base(family, family.gguf_rope_style);
        c.hidden_size = meta.usize(&meta.key("embedding_length"))?;
        c.num_heads = meta.usize(&meta.key("attention.head_count"))?;
        c.num_kv_heads = meta
            .opt_usize(&meta.key("attention.head_count_kv"))?
            .unwrap_or(c.num_heads);
        c.head_dim = match meta.opt_usize(&meta.key("attention.key_length"))? {
            Some(d) => d,
            None => c.hidden_size / c.num_heads.max(1),
        };
        c.vocab_size = match meta.opt_usize(&meta.key("vocab_size"))? {
            Some(v) => v,
            None => match md.get("tokenizer.ggml.tokens") {
                Some(Value::Array(tokens)) => tokens.len(),
                _ => return Err(meta.missing(&meta.key("vocab_size"))),
            },
        };
        c.trained_context_len = meta.usize(&meta.key("context_length"))?;
        c.max_model_len = c.trained_context_len;
        c.intermediate_size = meta.usize(&meta.key("feed_forward_length"))?;
        c.num_layers = meta.usize(&meta.key("block_count"))?;
        c.rms_norm_eps = meta.f32(&meta.key("attention.layer_norm_rms_epsilon"))?;
        c.rope_theta = meta
            .opt_f32(&meta.key("rope.freq_base"))?
            .unwrap_or(10_000.0);
        // GGUF carries Llama 3.1 scaling as a `rope_freqs.weight` tensor; the
        // loader decides tied embeddings by whether `output.weight` exists.
        (family.from_gguf)(&mut c, &meta)?;
        c.validate(path)?;
        Ok(c)
    }
}

/// Typed access to GGUF metadata with errors that name the file and key.
pub struct GgufMeta<'a> {
    path: &'a Path,
    md: &'a HashMap<String, Value>,
}

impl GgufMeta<'_> {
    /// `{architecture}.{k}`, the key of an architecture's own value.
    pub fn key(&self, k: &str) -> String {
        let arch = match self.md.get("general.architecture") {
            Some(Value::String(s)) => s.as_str(),
            _ => "",
        };
        format!("{arch}.{k}")
    }

    fn missing(&self, key: &str) -> ModelError {
        ModelError::format(self.path, format!("missing metadata key '{key}'"))
    }

    fn bad(&self, key: &str, e: candle_core::Error) -> ModelError {
        ModelError::format(self.path, format!("metadata key '{key}': {e}"))
    }

    /// A string value.
    pub fn string(&self, key: &str) -> Result<&str> {
        self.opt_string(key)?.ok_or_else(|| self.missing(key))
    }

    /// A string value, if present.
    pub fn opt_string(&self, key: &str) -> Result<Option<&str>> {
        let Some(v) = self.md.get(key) else {
            return Ok(None);
        };
        v.to_string()
            .map(|s| Some(s.as_str()))
            .map_err(|e| self.bad(key, e))
    }

    /// A non-negative integer, if present.
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        let Some(v) = self.md.get(key) else {
            return Ok(None);
        };
        let n = match v {
            Value::U8(x) => *x as u64,
            Value::U16(x) => *x as u64,
            Value::U32(x) => *x as u64,
            Value::U64(x) => *x,
            Value::I8(x) if *x >= 0 => *x as u64,
            Value::I16(x) if *x >= 0 => *x as u64,
            Value::I32(x) if *x >= 0 => *x as u64,
            Value::I64(x) if *x >= 0 => *x as u64,
            _ => {
                return Err(ModelError::format(
                    self.path,
                    format!("metadata key '{key}' is not a non-negative integer: {v:?}"),
                ))
            }
        };
        usize::try_from(n)
            .map(Some)
            .map_err(|_| ModelError::format(self.path, format!("metadata key '{key}' too large")))
    }

    /// A non-negative integer.
    pub fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }

    /// A float, if present.
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x)),
            Some(Value::F64(x)) => Ok(Some(*x as f32)),
            Some(v) => Err(ModelError::format(
                self.path,
                format!("metadata key '{key}' is not a float: {v:?}"),
            )),
        }
    }

    /// A float.
    pub fn f32(&self, key: &str) -> Result<f32> {
        self.opt_f32(key)?.ok_or_else(|| self.missing(key))
    }

    /// An error about this file.
    pub fn error(&self, msg: impl Into<String>) -> ModelError {
        ModelError::format(self.path, msg.into())
    }
}
