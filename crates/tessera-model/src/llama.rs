//! The Llama-family forward pass, written once over [`Backend`] operations.
//!
//! Llama 2/3, SmolLM2 and Mistral are this graph as is; Qwen2 adds Q/K/V biases
//! (inside the fused QKV layer) and Qwen3 per-head Q/K RMSNorm.

use crate::backend::{AttentionShape, Backend, RopeTable};
use crate::batch::FlatBatch;
use crate::config::ModelConfig;
use crate::error::Result;
use crate::weights::LlamaWeights;

/// A model's weights and constants on a backend.
pub struct LlamaModel<B: Backend> {
    pub config: ModelConfig,
    weights: LlamaWeights<B>,
    rope: B::Rope,
    attn: AttentionShape,
}

impl<B: Backend> LlamaModel<B> {
    /// Binds loaded weights to their configuration; the rotary table covers
    /// `max_positions` positions.
    pub fn new(
        backend: &B,
        config: ModelConfig,
        weights: LlamaWeights<B>,
        max_positions: usize,
    ) -> Result<Self> {
        let table = rope_table(&config, weights.rope_freq_factors.as_deref(), max_positions);
        let attn = AttentionShape {
            num_heads: config.num_heads,
            num_kv_heads: config.num_kv_heads,
            head_dim: config.head_dim,
            scale: 1.0 / (config.head_dim as f32).sqrt(),
            sliding_window: config.sliding_window,
        };
        Ok(Self {
            rope: backend.upload_rope(table)?,
            config,
            weights,
            attn,
        })
    }

    /// Runs the batch: writes its K/V into `cache` and returns the logits of the
    /// rows in `batch.logit_rows`, `[rows, vocab]`.
    pub fn forward(&self, b: &B, cache: &mut B::KvCache, batch: &FlatBatch) -> Result<B::Tensor> {
        let x = self.final_hidden(b, cache, batch)?;
        let last = b.gather_rows(&x, &batch.logit_rows)?;
        b.logits(&last, &self.weights.lm_head)
    }

    /// Runs the batch: writes its K/V into `cache` and returns every new
    /// token's last hidden state after the final norm, `[tokens, hidden]`
    /// (what the LM head reads; what an embedder pools).
    pub fn final_hidden(
        &self,
        b: &B,
        cache: &mut B::KvCache,
        batch: &FlatBatch,
    ) -> Result<B::Tensor> {
        let c = &self.config;
        let w = &self.weights;
        let eps = c.rms_norm_eps;
        let mut residual = b.embedding(&w.embedding, &batch.token_ids)?;
        let Some(first) = w.layers.first() else {
            return b.rms_norm(&residual, &w.final_norm, eps);
        };
        let mut x = b.rms_norm(&residual, &first.attn_norm, eps)?;
        for (i, layer) in w.layers.iter().enumerate() {
            let mut qkv = b.linear(&x, &layer.qkv)?;
            if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                b.head_rms_norm(&mut qkv, qn, 0, c.num_heads, c.head_dim, eps)?;
                b.head_rms_norm(&mut qkv, kn, c.num_heads, c.num_kv_heads, c.head_dim, eps)?;
            }
            b.rotary_and_cache_write(&mut qkv, &self.rope, cache, i, &self.attn, batch)?;
            let attn = b.paged_attention(&qkv, cache, i, &self.attn, batch)?;
            let o = b.linear(&attn, &layer.o)?;
            x = b.add_rms_norm(&mut residual, &o, &layer.ffn_norm, eps)?;
            let h = b.silu_mul(&b.linear(&x, &layer.gate_up)?)?;
            let down = b.linear(&h, &layer.down)?;
            let next_norm = match w.layers.get(i + 1) {
                Some(next) => &next.attn_norm,
                None => &w.final_norm,
            };
            x = b.add_rms_norm(&mut residual, &down, next_norm, eps)?;
        }
        Ok(x)
    }
}

/// Cosines and sines of every rotated pair at every position.
pub fn rope_table(
    config: &ModelConfig,
    freq_factors: Option<&[f32]>,
    max_positions: usize,
) -> RopeTable {
    let d = config.head_dim;
    let half = d / 2;
    let mut inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / config.rope_theta.powf(2.0 * i as f32 / d as f32))
        .collect();
    if let Some(s) = &config.rope_scaling {
        // Llama 3.1: slow down the low frequencies, keep the high ones, blend between.
        let low_wavelen = s.original_max_position_embeddings as f32 / s.low_freq_factor;
        let high_wavelen = s.original_max_position_embeddings as f32 / s.high_freq_factor;
        for f in inv_freq.iter_mut() {
            let wavelen = 2.0 * std::f32::consts::PI / *f;
            if wavelen > low_wavelen {
                *f /= s.factor;
            } else if wavelen >= high_wavelen {
                let smooth = (s.original_max_position_embeddings as f32 / wavelen
                    - s.low_freq_factor)
                    / (s.high_freq_factor - s.low_freq_factor);
                *f = (1.0 - smooth) * *f / s.factor + smooth * *f;
            }
        }
    }
    if let Some(factors) = freq_factors {
        for (f, k) in inv_freq.iter_mut().zip(factors) {
            *f /= k;
        }
    }
    let mut cos = Vec::with_capacity(max_positions * half);
    let mut sin = Vec::with_capacity(max_positions * half);
    for p in 0..max_positions {
        for f in &inv_freq {
            let angle = p as f32 * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    RopeTable {
        cos,
        sin,
        max_positions,
        head_dim: d,
        style: config.rope_style,
    }
}
