//! The shape of a Llama-family model, read from GGUF metadata or a Hugging Face
//! `config.json`. One struct serves every supported architecture: they differ only
//! in a few switches (QKV bias, per-head Q/K norms, rotary layout, sliding window).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use serde::Deserialize;

use crate::error::{ModelError, Result};

/// The architectures tessera implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama 2/3, SmolLM2, Mistral (all `llama` in GGUF).
    Llama,
    /// Qwen2 / Qwen2.5: Llama with biases on the Q, K and V projections.
    Qwen2,
    /// Qwen3: Llama with RMSNorm on each head of Q and K.
    Qwen3,
    /// Phi-3: Llama with Q|K|V and gate|up each stored as one fused matrix.
    Phi3,
}

impl Architecture {
    const SUPPORTED_GGUF: &'static str = "llama, qwen2, qwen3, phi3";
    const SUPPORTED_HF: &'static str =
        "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Phi3ForCausalLM";

    fn from_gguf(name: &str) -> Option<Self> {
        match name {
            "llama" => Some(Self::Llama),
            "qwen2" => Some(Self::Qwen2),
            "qwen3" => Some(Self::Qwen3),
            "phi3" => Some(Self::Phi3),
            _ => None,
        }
    }

    fn from_hf(name: &str) -> Option<Self> {
        match name {
            "LlamaForCausalLM" | "MistralForCausalLM" => Some(Self::Llama),
            "Qwen2ForCausalLM" => Some(Self::Qwen2),
            "Qwen3ForCausalLM" => Some(Self::Qwen3),
            "Phi3ForCausalLM" => Some(Self::Phi3),
            _ => None,
        }
    }
}

/// How rotary embeddings pair up the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Dimension `2i` rotates with `2i + 1` (GGUF `llama`: llama.cpp permutes Q/K
    /// weights at conversion so that this layout applies).
    Interleaved,
    /// Dimension `i` rotates with `i + head_dim / 2` (Hugging Face checkpoints,
    /// and GGUF Qwen models).
    Halves,
}

/// Llama 3.1-style frequency scaling of the rotary embedding.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Llama3RopeScaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: usize,
}

/// Everything the forward needs to know about a model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_style: RopeStyle,
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// Longest sequence the model was trained for (`context_length` in GGUF,
    /// `max_position_embeddings` in config.json).
    pub trained_context_len: usize,
    /// Longest sequence (prompt plus output) this load serves: the trained
    /// context unless the operator capped it (`--max-model-len`); never more.
    pub max_model_len: usize,
    /// Attention looks back at most this many positions (Mistral v0.1).
    pub sliding_window: Option<usize>,
    pub qkv_bias: bool,
    pub qk_norm: bool,
    pub tie_word_embeddings: bool,
}

impl ModelConfig {
    /// Width of the fused Q|K|V projection output.
    pub fn qkv_width(&self) -> usize {
        (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
    }

    /// Whether Q|K|V and gate|up are stored fused (`attn_qkv`, a `2 x
    /// intermediate` `ffn_up`), as Phi-3 ships them.
    pub fn fused_projections(&self) -> bool {
        self.architecture == Architecture::Phi3
    }

    /// Width of the attention output (all query heads).
    pub fn q_width(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of the K (or V) projection output.
    pub fn kv_width(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Reads the configuration from GGUF metadata. `path` is only used in errors.
    pub fn from_gguf(path: &Path, md: &HashMap<String, Value>) -> Result<Self> {
        let meta = GgufMeta { path, md };
        let arch_name = meta.string("general.architecture")?;
        let architecture =
            Architecture::from_gguf(arch_name).ok_or_else(|| ModelError::UnknownArchitecture {
                path: path.to_path_buf(),
                arch: arch_name.to_string(),
                supported: Architecture::SUPPORTED_GGUF.to_string(),
            })?;
        let key = |k: &str| format!("{arch_name}.{k}");
        // Mixtral and other MoE GGUFs reuse a dense architecture's name.
        if let Some(experts) = meta.opt_usize(&key("expert_count"))?.filter(|&n| n > 0) {
            return Err(ModelError::format(
                path,
                format!(
                    "a mixture of experts ({experts} experts, `{}`) is not supported: tessera \
                     runs dense {arch_name} models only",
                    key("expert_count")
                ),
            ));
        }
        let hidden_size = meta.usize(&key("embedding_length"))?;
        let num_heads = meta.usize(&key("attention.head_count"))?;
        let num_kv_heads = meta
            .opt_usize(&key("attention.head_count_kv"))?
            .unwrap_or(num_heads);
        let head_dim = match meta.opt_usize(&key("attention.key_length"))? {
            Some(d) => d,
            None => hidden_size / num_heads.max(1),
        };
        let vocab_size = match meta.opt_usize(&key("vocab_size"))? {
            Some(v) => v,
            None => match md.get("tokenizer.ggml.tokens") {
                Some(Value::Array(tokens)) => tokens.len(),
                _ => return Err(meta.missing(&key("vocab_size"))),
            },
        };
        let context_len = meta.usize(&key("context_length"))?;
        let config = Self {
            architecture,
            hidden_size,
            intermediate_size: meta.usize(&key("feed_forward_length"))?,
            num_layers: meta.usize(&key("block_count"))?,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size,
            rms_norm_eps: meta.f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: meta.opt_f32(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            rope_style: match architecture {
                Architecture::Llama => RopeStyle::Interleaved,
                Architecture::Qwen2 | Architecture::Qwen3 | Architecture::Phi3 => RopeStyle::Halves,
            },
            // GGUF carries Llama 3.1 scaling as a `rope_freqs.weight` tensor instead.
            rope_scaling: None,
            trained_context_len: context_len,
            max_model_len: context_len,
            sliding_window: None,
            qkv_bias: architecture == Architecture::Qwen2,
            qk_norm: architecture == Architecture::Qwen3,
            // Decided by the loader: tied when `output.weight` is absent.
            tie_word_embeddings: false,
        };
        config.validate(path)?;
        Ok(config)
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_json(path: &Path, text: &str) -> Result<Self> {
        let raw: HfConfig = serde_json::from_str(text)
            .map_err(|e| ModelError::format(path, format!("invalid config.json: {e}")))?;
        let arch_name = raw
            .architectures
            .as_ref()
            .and_then(|a| a.first())
            .ok_or_else(|| ModelError::format(path, "config.json has no 'architectures'"))?;
        let architecture =
            Architecture::from_hf(arch_name).ok_or_else(|| ModelError::UnknownArchitecture {
                path: path.to_path_buf(),
                arch: arch_name.clone(),
                supported: Architecture::SUPPORTED_HF.to_string(),
            })?;
        let rope_scaling = match &raw.rope_scaling {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let kind = v
                    .get("rope_type")
                    .or_else(|| v.get("type"))
                    .and_then(|t| t.as_str())
                    .unwrap_or("");
                match kind {
                    "llama3" => Some(serde_json::from_value(v.clone()).map_err(|e| {
                        ModelError::format(path, format!("invalid llama3 rope_scaling: {e}"))
                    })?),
                    "default" => None,
                    other => {
                        return Err(ModelError::format(
                            path,
                            format!("unsupported rope_scaling type '{other}'"),
                        ))
                    }
                }
            }
        };
        let num_kv_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        let head_dim = raw
            .head_dim
            .unwrap_or(raw.hidden_size / raw.num_attention_heads.max(1));
        let sliding_window = match architecture {
            // Qwen configs carry a window but only use it when `use_sliding_window` is set.
            Architecture::Qwen2 | Architecture::Qwen3 if !raw.use_sliding_window => None,
            _ => raw.sliding_window,
        };
        let context_len = raw.max_position_embeddings.unwrap_or(4096);
        let config = Self {
            architecture,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            num_kv_heads,
            head_dim,
            vocab_size: raw.vocab_size,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta: raw.rope_theta.unwrap_or(10_000.0),
            rope_style: RopeStyle::Halves,
            rope_scaling,
            trained_context_len: context_len,
            max_model_len: context_len,
            sliding_window,
            qkv_bias: match architecture {
                Architecture::Qwen2 => true,
                _ => raw.attention_bias,
            },
            qk_norm: architecture == Architecture::Qwen3,
            tie_word_embeddings: raw.tie_word_embeddings,
        };
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let fail = |msg: String| Err(ModelError::format(path, msg));
        if self.num_layers == 0 || self.hidden_size == 0 || self.vocab_size == 0 {
            return fail(format!(
                "degenerate model shape: {} layers, hidden size {}, vocabulary {}",
                self.num_layers, self.hidden_size, self.vocab_size
            ));
        }
        if self.num_heads == 0
            || self.num_kv_heads == 0
            || !self.num_heads.is_multiple_of(self.num_kv_heads)
        {
            return fail(format!(
                "{} attention heads cannot be shared by {} KV heads",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return fail(format!(
                "head dimension {} must be even and positive",
                self.head_dim
            ));
        }
        if self.trained_context_len == 0 {
            return fail("context length 0".to_string());
        }
        // The file comes from the internet and these numbers size buffers
        // (per-layer tables, the RoPE table) before any tensor is read: far
        // beyond any real model, they are an error, not an allocation.
        let limits = [
            ("layers", self.num_layers, 1 << 12),
            ("hidden size", self.hidden_size, 1 << 20),
            ("intermediate size", self.intermediate_size, 1 << 22),
            ("attention heads", self.num_heads, 1 << 12),
            ("KV heads", self.num_kv_heads, 1 << 12),
            ("head dimension", self.head_dim, 1 << 14),
            ("vocabulary", self.vocab_size, 1 << 24),
            ("context length", self.trained_context_len, 1 << 22),
        ];
        for (what, value, max) in limits {
            if value > max {
                return fail(format!(
                    "{what} {value} is beyond any real model (at most {max})"
                ));
            }
        }
        Ok(())
    }
}

/// The fields of `config.json` tessera reads.
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
    use_sliding_window: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    tie_word_embeddings: bool,
}

/// Typed access to GGUF metadata with errors that name the file and key.
struct GgufMeta<'a> {
    path: &'a Path,
    md: &'a HashMap<String, Value>,
}

impl GgufMeta<'_> {
    fn missing(&self, key: &str) -> ModelError {
        ModelError::format(self.path, format!("missing metadata key '{key}'"))
    }

    fn bad(&self, key: &str, e: candle_core::Error) -> ModelError {
        ModelError::format(self.path, format!("metadata key '{key}': {e}"))
    }

    fn string(&self, key: &str) -> Result<&str> {
        let v = self.md.get(key).ok_or_else(|| self.missing(key))?;
        v.to_string()
            .map(|s| s.as_str())
            .map_err(|e| self.bad(key, e))
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
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

    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }

    fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
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

    fn f32(&self, key: &str) -> Result<f32> {
        self.opt_f32(key)?.ok_or_else(|| self.missing(key))
    }
}
