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
        // One work item per (token, KV head): its query heads run one after
        // another, so the K and V rows the first one reads from memory are
        // still in cache for the others. Each head is computed start to end
        // by one thread in position order, so results never depend on the batch.
        out.par_chunks_mut(group * d).enumerate().for_each_init(
            Vec::new,
            |scores, (item, heads_out)| {
                let (t, kv_head) = (item / shape.num_kv_heads, item % shape.num_kv_heads);
                let (s, pos) = token_seq[t];
                let table = &batch.seqs[s].block_table;
                let kv_off = kv_head * d;
                let first = match shape.sliding_window {
                    Some(w) => (pos + 1).saturating_sub(w),
                    None => 0,
                };
                let slot = |j: usize| table[j / bs] as usize * bs + j % bs;
                for (i, o) in heads_out.chunks_mut(d).enumerate() {
                    let head = kv_head * group + i;
                    let q = &qkv.data[t * qkv.cols + head * d..t * qkv.cols + (head + 1) * d];
                    scores.clear();
                    let mut max = f32::NEG_INFINITY;
                    for j in first..=pos {
                        let base = slot(j) * width + kv_off;
                        let s = dot(q, &k_pool[base..base + d]) * shape.scale;
                        max = max.max(s);
                        scores.push(s);
                    }
                    let mut denom = 0f32;
                    for s in scores.iter_mut() {
                        *s = (*s - max).exp();
                        denom += *s;
                    }
                    let terms = (first..=pos).zip(scores.iter()).map(|(j, p)| {
                        let base = slot(j) * width + kv_off;
                        (p / denom, &v_pool[base..base + d])
                    });
                    weighted_sum(o, terms);
                }
            },
        );
        Ok(CpuTensor::new(out, batch.num_tokens(), h * d))
    }
}

/// `o = sum of w * v` over `terms`, each element summed in term order. The
/// common head sizes get a fixed-size accumulator the compiler keeps in
/// registers instead of reloading `o` for every term; the bits are the same.
fn weighted_sum<'a>(o: &mut [f32], terms: impl Iterator<Item = (f32, &'a [f32])>) {
    match o.len() {
        64 => weighted_sum_fixed::<64>(o, terms),
        128 => weighted_sum_fixed::<128>(o, terms),
        _ => {
            o.fill(0.0);
            for (w, v) in terms {
                for (acc, x) in o.iter_mut().zip(v) {
                    *acc += w * x;
                }
            }
        }
    }
}

fn weighted_sum_fixed<'a, const D: usize>(
    o: &mut [f32],
    terms: impl Iterator<Item = (f32, &'a [f32])>,
) {
    let mut acc = [0f32; D];
    for (w, v) in terms {
        for (a, x) in acc.iter_mut().zip(&v[..D]) {
            *a += w * x;
        }
    }
    o.copy_from_slice(&acc);
}

/// `a . b` with eight running sums, combined pairwise at the end: a fixed order
/// (so results never depend on the batch) that the compiler can keep in SIMD
/// lanes, unlike one sequential sum whose every add waits on the last.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (a_rest, b_rest) = (a_chunks.remainder(), b_chunks.remainder());
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    for (i, (x, y)) in a_rest.iter().zip(b_rest).enumerate() {
        acc[i] += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}
