//! Paged KV cache and attention on the CPU.
//!
//! Each layer's K and V pools are laid out `[slot][kv_head][head_dim]`, a slot
//! being `block * block_size + offset`. Attention walks a sequence's block table
//! position by position, so prefill, chunked prefill and decode are one code path.

use rayon::prelude::*;

use crate::backend::{AttentionShape, KvCacheShape};
use crate::batch::FlatBatch;
use crate::error::{ModelError, Result};

use super::CpuTensor;
use kernel::HeadGroup;

mod kernel;
#[cfg(target_arch = "x86_64")]
mod kernel_avx2;
#[cfg(test)]
mod tests;

/// K and V pools of every layer.
pub struct CpuKvCache {
    shape: KvCacheShape,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl CpuKvCache {
    /// Allocates zeroed pools.
    pub fn new(shape: KvCacheShape) -> Result<Self> {
        let per_layer = shape
            .num_blocks
            .checked_mul(shape.block_size)
            .and_then(|n| n.checked_mul(shape.num_kv_heads * shape.head_dim))
            .ok_or_else(|| ModelError::Backend(format!("KV cache {shape:?} is too large")))?;
        let layer = || vec![0f32; per_layer];
        Ok(Self {
            shape,
            k: (0..shape.num_layers).map(|_| layer()).collect(),
            v: (0..shape.num_layers).map(|_| layer()).collect(),
        })
    }

    /// The pool geometry.
    pub fn shape(&self) -> KvCacheShape {
        self.shape
    }

    /// Floats in one slot (all KV heads of one token).
    fn slot_width(&self) -> usize {
        self.shape.num_kv_heads * self.shape.head_dim
    }

    /// Writes each new token's K and V (taken from the fused Q|K|V rows) into its slot.
    pub fn write(
        &mut self,
        layer: usize,
        qkv: &CpuTensor,
        shape: &AttentionShape,
        slot_mapping: &[u32],
    ) -> Result<()> {
        let width = self.slot_width();
        let k_start = shape.num_heads * shape.head_dim;
        let num_slots = self.shape.num_blocks * self.shape.block_size;
        let (k_pool, v_pool) = (&mut self.k[layer], &mut self.v[layer]);
        for (row, &slot) in qkv.data.chunks(qkv.cols).zip(slot_mapping) {
            let slot = slot as usize;
            if slot >= num_slots {
                return Err(ModelError::InvalidBatch(format!(
                    "KV slot {slot} outside the pool of {num_slots}"
                )));
            }
            let dst = slot * width..(slot + 1) * width;
            k_pool[dst.clone()].copy_from_slice(&row[k_start..k_start + width]);
            v_pool[dst].copy_from_slice(&row[k_start + width..k_start + 2 * width]);
        }
        Ok(())
    }

    /// Causal attention of every new token of `batch` over its sequence's cache.
    pub fn attention(
        &self,
        layer: usize,
        qkv: &CpuTensor,
        shape: &AttentionShape,
        batch: &FlatBatch,
    ) -> Result<CpuTensor> {
        let d = shape.head_dim;
        let h = shape.num_heads;
        let group = h / shape.num_kv_heads;
        let width = self.slot_width();
        let bs = self.shape.block_size;
        let (k_pool, v_pool) = (&self.k[layer], &self.v[layer]);

        // token index -> (sequence, position)
        let mut token_seq = Vec::with_capacity(batch.num_tokens());
        for (s, meta) in batch.seqs.iter().enumerate() {
            for j in 0..meta.query_len {
                let pos = meta.context_len - meta.query_len + j;
                token_seq.push((s, pos));
            }
        }

        let mut out = vec![0f32; batch.num_tokens() * h * d];
        // One work item per (token, KV head): its query heads share each K
        // and V row the kernel reads. Each head is computed start to end by
        // one thread in position order, so results never depend on the batch.
        out.par_chunks_mut(group * d).enumerate().for_each_init(
            || (Vec::new(), Vec::new()),
            |(rows, scores), (item, heads_out)| {
                let (t, kv_head) = (item / shape.num_kv_heads, item % shape.num_kv_heads);
                let (s, pos) = token_seq[t];
                let table = &batch.seqs[s].block_table;
                let first = match shape.sliding_window {
                    Some(w) => (pos + 1).saturating_sub(w),
                    None => 0,
                };
                rows.clear();
                rows.extend(
                    (first..=pos)
                        .map(|j| (table[j / bs] as usize * bs + j % bs) * width + kv_head * d),
                );
                let q0 = t * qkv.cols + kv_head * group * d;
                let heads = HeadGroup {
                    q: &qkv.data[q0..q0 + group * d],
                    rows,
                    k_pool,
                    v_pool,
                    head_dim: d,
                    scale: shape.scale,
                };
                kernel::attend(&heads, scores, heads_out);
            },
        );
        Ok(CpuTensor::new(out, batch.num_tokens(), h * d))
    }
}
