//! The decoder forward every family runs, written once over [`Backend`]
//! operations: Llama's graph, with the switches of [`ModelConfig`].
//!
//! Llama 2/3, SmolLM2 and Mistral are this graph as is; Qwen2 adds Q/K/V
//! biases (inside the fused QKV layer), Qwen3 per-head Q/K RMSNorm, Phi-3
//! loads fused projections, Gemma 2 and 3 scale the embeddings, norm each
//! sublayer's output before adding it to the residual (`sandwich_norms`),
//! gate with GELU, soft-cap scores and logits, and alternate sliding-window
//! and global layers, each with its own rotary table.

use super::CausalLm;
use crate::backend::{AttentionShape, Backend, RopeTable};
use crate::batch::FlatBatch;
use crate::config::{Activation, ModelConfig, RopeScaling};
use crate::error::Result;
use crate::weights::DecoderWeights;

/// A decoder's weights and constants on a backend.
pub struct DecoderModel<B: Backend> {
    config: ModelConfig,
    weights: DecoderWeights<B>,
    /// The rotary table of the global layers (of every layer unless `local_rope`).
    rope: B::Rope,
    /// The rotary table of the sliding-window layers, when theirs differs.
    local_rope: Option<B::Rope>,
    /// Each layer's attention: window, scale, soft-cap.
    attn: Vec<AttentionShape>,
}

impl<B: Backend> DecoderModel<B> {
    /// Binds loaded weights to their configuration; the rotary tables cover
    /// `max_positions` positions.
    pub fn new(
        backend: &B,
        config: ModelConfig,
        weights: DecoderWeights<B>,
        max_positions: usize,
    ) -> Result<Self> {
        let factors = weights.rope_freq_factors.as_deref();
        let table = rope_table(
            &config,
            config.rope_theta,
            config.rope_scaling,
            factors,
            max_positions,
        );
        let local_rope = match config.rope_local_theta {
            Some(theta) => {
                Some(backend.upload_rope(rope_table(&config, theta, None, None, max_positions))?)
            }
            None => None,
        };
        let attn = (0..config.num_layers)
            .map(|layer| AttentionShape {
                num_heads: config.num_heads,
                num_kv_heads: config.num_kv_heads,
                head_dim: config.head_dim,
                scale: config.attention_scale(),
                sliding_window: config.layer_window(layer),
                softcap: config.attn_logit_softcap,
            })
            .collect();
        Ok(Self {
            rope: backend.upload_rope(table)?,
            local_rope,
            config,
            weights,
            attn,
        })
    }

    /// The rotary table of `layer`.
    fn rope_of(&self, layer: usize) -> &B::Rope {
        match (&self.local_rope, self.attn[layer].sliding_window) {
            (Some(local), Some(_)) => local,
            _ => &self.rope,
        }
    }

    /// `residual += x` (after `post_norm` of `x` when the family has one),
    /// then the new residual normed by `next`.
    fn add_and_norm(
        &self,
        b: &B,
        residual: &mut B::Tensor,
        x: &B::Tensor,
        post_norm: Option<&B::Tensor>,
        next: &B::Tensor,
    ) -> Result<B::Tensor> {
        let eps = self.config.rms_norm_eps;
        match post_norm {
            Some(post) => b.add_normed_rms_norm(residual, x, post, next, eps),
            None => b.add_rms_norm(residual, x, next, eps),
        }
    }
}

impl<B: Backend> CausalLm<B> for DecoderModel<B> {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn final_hidden(&self, b: &B, cache: &mut B::KvCache, batch: &FlatBatch) -> Result<B::Tensor> {
        let c = &self.config;
        let w = &self.weights;
        let eps = c.rms_norm_eps;
        let mut residual = b.embedding(&w.embedding, &batch.token_ids)?;
        if let Some(s) = c.embedding_scale {
            b.scale(&mut residual, s)?;
        }
        let Some(first) = w.layers.first() else {
            return b.rms_norm(&residual, &w.final_norm, eps);
        };
        let mut x = b.rms_norm(&residual, &first.attn_norm, eps)?;
        for (i, layer) in w.layers.iter().enumerate() {
            let shape = &self.attn[i];
            let mut qkv = b.linear(&x, &layer.qkv)?;
            if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                b.head_rms_norm(&mut qkv, qn, 0, c.num_heads, c.head_dim, eps)?;
                b.head_rms_norm(&mut qkv, kn, c.num_heads, c.num_kv_heads, c.head_dim, eps)?;
            }
            b.rotary_and_cache_write(&mut qkv, self.rope_of(i), cache, i, shape, batch)?;
            let attn = b.paged_attention(&qkv, cache, i, shape, batch)?;
            let o = b.linear(&attn, &layer.o)?;
            x = self.add_and_norm(
                b,
                &mut residual,
                &o,
                layer.post_attn_norm.as_ref(),
                &layer.ffn_norm,
            )?;
            let gate_up = b.linear(&x, &layer.gate_up)?;
            let h = match c.activation {
                Activation::Silu => b.silu_mul(&gate_up)?,
                Activation::GeluTanh => b.gelu_tanh_mul(&gate_up)?,
            };
            let down = b.linear(&h, &layer.down)?;
            let next_norm = match w.layers.get(i + 1) {
                Some(next) => &next.attn_norm,
                None => &w.final_norm,
            };
            x = self.add_and_norm(
                b,
                &mut residual,
                &down,
                layer.post_ffn_norm.as_ref(),
                next_norm,
            )?;
        }
        Ok(x)
    }

    fn logits(&self, b: &B, hidden: &B::Tensor) -> Result<B::Tensor> {
        let mut logits = b.logits(hidden, &self.weights.lm_head)?;
        if let Some(cap) = self.config.final_logit_softcap {
            b.softcap(&mut logits, cap)?;
        }
        Ok(logits)
    }
}

/// Cosines and sines of every rotated pair at every position, for rotary
/// base `theta` and its `scaling`; `freq_factors` divide the frequencies
/// (GGUF `rope_freqs.weight`).
pub fn rope_table(
    config: &ModelConfig,
    theta: f32,
    scaling: Option<RopeScaling>,
    freq_factors: Option<&[f32]>,
    max_positions: usize,
) -> RopeTable {
    let d = config.head_dim;
    let half = d / 2;
    let mut inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / theta.powf(2.0 * i as f32 / d as f32))
        .collect();
    match scaling {
        Some(RopeScaling::Llama3(s)) => {
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
        Some(RopeScaling::Linear { factor }) => {
            for f in inv_freq.iter_mut() {
                *f /= factor;
            }
        }
        None => {}
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
