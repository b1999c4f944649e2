//! The shape of a decoder model, read from GGUF metadata ([`gguf`]) or a
//! Hugging Face `config.json` ([`hf`]). One struct serves every family of
//! [`crate::families`]: the common fields are read here, and each family sets
//! its own switches (QKV bias, per-head Q/K norms, sandwich norms, soft-capping,
//! which layers slide) in its module.

mod gguf;
mod hf;

pub use gguf::GgufMeta;

use serde::Deserialize;

use crate::error::{ModelError, Result};
use crate::families::Family;

/// How rotary embeddings pair up the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Dimension `2i` rotates with `2i + 1` (GGUF `llama`: llama.cpp permutes Q/K
    /// weights at conversion so that this layout applies).
    Interleaved,
    /// Dimension `i` rotates with `i + head_dim / 2` (Hugging Face checkpoints,
    /// and GGUF Qwen, Phi-3 and Gemma models).
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

/// How the rotary frequencies are scaled for a longer context.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Llama 3.1: low frequencies slowed, high ones kept, blended between.
    Llama3(Llama3RopeScaling),
    /// Every frequency divided by `factor` (position interpolation; Gemma 3's
    /// global layers).
    Linear { factor: f32 },
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu(gate) * up` (Llama, Qwen, Phi-3).
    Silu,
    /// `gelu_tanh(gate) * up`, GELU's tanh approximation (Gemma's GeGLU).
    GeluTanh,
}

/// Which layers attend through the sliding window (when the model has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlidingLayers {
    /// Every layer (Mistral).
    All,
    /// Every `n`th layer (`(layer + 1) % n == 0`) is global, the others slide
    /// (Gemma 2: `n = 2`; Gemma 3: its `sliding_window_pattern`, 6).
    GlobalEvery(usize),
    /// One flag per layer, true where it slides (a config's `layer_types`).
    PerLayer(Vec<bool>),
}

/// Everything the forward needs to know about a model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The family whose module read this configuration.
    pub family: &'static Family,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    /// Width of one attention head; may differ from `hidden_size / num_heads` (Gemma).
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f32,
    /// Rotary base of the global layers (of every layer unless `rope_local_theta`).
    pub rope_theta: f32,
    /// Rotary base of the sliding-window layers, unscaled (Gemma 3's local
    /// layers: 10 000); `None`: they use `rope_theta` and its scaling.
    pub rope_local_theta: Option<f32>,
    pub rope_style: RopeStyle,
    pub rope_scaling: Option<RopeScaling>,
    /// Longest sequence the model was trained for (`context_length` in GGUF,
    /// `max_position_embeddings` in config.json).
    pub trained_context_len: usize,
    /// Longest sequence (prompt plus output) this load serves: the trained
    /// context unless the operator capped it (`--max-model-len`); never more.
    pub max_model_len: usize,
    /// Attention looks back at most this many positions in the layers
    /// `sliding_layers` names (Mistral v0.1: all; Gemma: alternate layers).
    pub sliding_window: Option<usize>,
    pub sliding_layers: SlidingLayers,
    pub qkv_bias: bool,
    /// RMSNorm over each head of Q and K before the rotation (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// Q|K|V and gate|up are stored fused (`attn_qkv`, a `2 x intermediate`
    /// `ffn_up`), as Phi-3 ships them.
    pub fused_projections: bool,
    pub activation: Activation,
    /// RMSNorm of the attention output and of the MLP output before each is
    /// added to the residual, besides the usual pre-norms (Gemma 2 and 3).
    pub sandwich_norms: bool,
    /// Added to every RMSNorm gain at load: Gemma's Hugging Face checkpoints
    /// store `w` for a gain of `1 + w` (llama.cpp's converter stores `1 + w`).
    pub norm_gain_offset: f32,
    /// The token embeddings are multiplied by this before the first layer
    /// (Gemma: `sqrt(hidden_size)`, rounded to the checkpoint's dtype).
    pub embedding_scale: Option<f32>,
    /// Attention scores are `cap * tanh(scores / cap)` (Gemma 2).
    pub attn_logit_softcap: Option<f32>,
    /// Logits are `cap * tanh(logits / cap)` (Gemma 2).
    pub final_logit_softcap: Option<f32>,
    /// Attention scores are scaled by `1 / sqrt(this)` instead of
    /// `1 / sqrt(head_dim)` (Gemma's `query_pre_attn_scalar`).
    pub query_pre_attn_scalar: Option<f32>,
    pub tie_word_embeddings: bool,
}

impl ModelConfig {
    /// Width of the fused Q|K|V projection output.
    pub fn qkv_width(&self) -> usize {
        (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
    }

    /// Width of the attention output (all query heads).
    pub fn q_width(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of the K (or V) projection output.
    pub fn kv_width(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// The window layer `layer` attends through, if any.
    pub fn layer_window(&self, layer: usize) -> Option<usize> {
        let slides = match &self.sliding_layers {
            SlidingLayers::All => true,
            SlidingLayers::GlobalEvery(n) => !(layer + 1).is_multiple_of(*n),
            SlidingLayers::PerLayer(flags) => flags.get(layer).copied().unwrap_or(false),
        };
        self.sliding_window.filter(|_| slides)
    }

    /// The window every layer attends through, if all of them slide. Only
    /// then may the KV blocks behind it be freed: a global layer (Gemma's
    /// every other or every sixth) reads the whole sequence.
    pub fn uniform_window(&self) -> Option<usize> {
        let all_slide = (0..self.num_layers).all(|l| self.layer_window(l).is_some());
        self.sliding_window.filter(|_| all_slide)
    }

    /// The scale of attention scores.
    pub fn attention_scale(&self) -> f32 {
        1.0 / self
            .query_pre_attn_scalar
            .unwrap_or(self.head_dim as f32)
            .sqrt()
    }

    /// A configuration with the common defaults of `family`: Llama's graph,
    /// which the family's module then switches.
    pub(crate) fn base(family: &'static Family, rope_style: RopeStyle) -> Self {
        Self {
            family,
            hidden_size: 0,
            intermediate_size: 0,
            num_layers: 0,
            num_heads: 0,
            num_kv_heads: 0,
            head_dim: 0,
            vocab_size: 0,
            rms_norm_eps: 1e-6,
            rope_theta: 10_000.0,
            rope_local_theta: None,
            rope_style,
            rope_scaling: None,
            trained_context_len: 0,
            max_model_len: 0,
            sliding_window: None,
            sliding_layers: SlidingLayers::All,
            qkv_bias: false,
            qk_norm: false,
            fused_projections: false,
            activation: Activation::Silu,
            sandwich_norms: false,
            norm_gain_offset: 0.0,
            embedding_scale: None,
            attn_logit_softcap: None,
            final_logit_softcap: None,
            query_pre_attn_scalar: None,
            tie_word_embeddings: false,
        }
    }

    fn validate(&self, path: &std::path::Path) -> Result<()> {
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
        if self.sliding_window == Some(0) {
            return fail("sliding window 0".to_string());
        }
        match &self.sliding_layers {
            SlidingLayers::GlobalEvery(0) => return fail("sliding window pattern 0".to_string()),
            SlidingLayers::PerLayer(flags) if flags.len() != self.num_layers => {
                return fail(format!(
                    "{} layer types for {} layers",
                    flags.len(),
                    self.num_layers
                ))
            }
            _ => {}
        }
        let positive = [
            ("attention logit soft-cap", self.attn_logit_softcap),
            ("final logit soft-cap", self.final_logit_softcap),
            ("query_pre_attn_scalar", self.query_pre_attn_scalar),
            ("embedding scale", self.embedding_scale),
        ];
        for (what, value) in positive {
            if let Some(v) = value.filter(|v| !(v.is_finite() && *v > 0.0)) {
                return fail(format!("{what} {v} must be positive"));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sliding(layers: SlidingLayers) -> ModelConfig {
        let mut c = ModelConfig::base(crate::families::REGISTRY[0], RopeStyle::Halves);
        c.num_layers = 4;
        c.sliding_window = Some(8);
        c.sliding_layers = layers;
        c
    }

    #[test]
    fn kv_blocks_may_be_freed_only_when_every_layer_slides() {
        assert_eq!(sliding(SlidingLayers::All).uniform_window(), Some(8));
        assert_eq!(
            sliding(SlidingLayers::GlobalEvery(2)).uniform_window(),
            None
        );
        let per_layer = SlidingLayers::PerLayer(vec![true, true, false, true]);
        assert_eq!(sliding(per_layer).uniform_window(), None);
        let mut none = sliding(SlidingLayers::All);
        none.sliding_window = None;
        assert_eq!(none.uniform_window(), None);
    }
}
