//! Paged KV cache and attention on the CPU.
//!
//! A slot is `block * block_size + offset`. Each layer's V pool is laid out
//! `[slot][kv_head][head_dim]`; its K pool holds, per block and KV head, a
//! transposed tile `[head_dim][block_size]`, so that the keys of a block are
//! consecutive in every dimension and a SIMD kernel scores one key per lane.
//! Attention walks a sequence's block table in position order, so prefill,
//! chunked prefill and decode are one code path. Values are stored as f16 or
//! f32 ([`KvCacheDtype`]) and widened as they are read.

use rayon::prelude::*;

use half::f16;

use crate::backend::{AttentionShape, KvCacheDtype, KvCacheShape};
use crate::batch::FlatBatch;
use crate::error::{ModelError, Result};

use super::CpuTensor;
use kernel::{HeadGroup, KeyRun, KvValue};

mod kernel;
#[cfg(target_arch = "x86_64")]
mod kernel_simd;
mod lazy;
#[cfg(test)]
mod tests;

/// K and V pools of every layer, in the configured value type.
pub struct CpuKvCache {
    shape: KvCacheShape,
    pools: Pools,
}

enum Pools {
    F16(LayerPools<f16>),
    F32(LayerPools<f32>),
}

/// Per layer, the K pool and the V pool.
struct LayerPools<T> {
    k: Vec<Vec<T>>,
    v: Vec<Vec<T>>,
}

impl<T: KvValue> LayerPools<T> {
    fn new(layers: usize, per_layer: usize) -> Result<Self> {
        let pools = || -> Result<Vec<Vec<T>>> {
            (0..layers).map(|_| lazy::zeroed_pool(per_layer)).collect()
        };
        Ok(Self {
            k: pools()?,
            v: pools()?,
        })
    }
}

impl CpuKvCache {
    /// Reserves zeroed pools; their memory is committed as blocks are
    /// written (see [`lazy`]).
    pub fn new(shape: KvCacheShape) -> Result<Self> {
        let per_layer = shape
            .num_blocks
            .checked_mul(shape.block_size)
            .and_then(|n| n.checked_mul(shape.num_kv_heads * shape.head_dim))
            .ok_or_else(|| ModelError::Backend(format!("KV cache {shape:?} is too large")))?;
        let pools = match shape.dtype {
            KvCacheDtype::F16 => Pools::F16(LayerPools::new(shape.num_layers, per_layer)?),
            KvCacheDtype::F32 => Pools::F32(LayerPools::new(shape.num_layers, per_layer)?),
        };
        Ok(Self { shape, pools })
    }

    /// The pool geometry.
    pub fn shape(&self) -> KvCacheShape {
        self.shape
    }

    /// Writes each new token's K and V (taken from the fused Q|K|V rows) into its slot.
    pub fn write(
        &mut self,
        layer: usize,
        qkv: &CpuTensor,
        shape: &AttentionShape,
        slot_mapping: &[u32],
    ) -> Result<()> {
        let pool = self.shape;
        match &mut self.pools {
            Pools::F16(p) => write(
                &pool,
                &mut p.k[layer],
                &mut p.v[layer],
                qkv,
                shape,
                slot_mapping,
            ),
            Pools::F32(p) => write(
                &pool,
                &mut p.k[layer],
                &mut p.v[layer],
                qkv,
                shape,
                slot_mapping,
            ),
        }
    }

    /// Causal attention of every new token of `batch` over its sequence's cache.
    pub fn attention(
        &self,
        layer: usize,
        qkv: &CpuTensor,
        shape: &AttentionShape,
        batch: &FlatBatch,
    ) -> Result<CpuTensor> {
        Ok(match &self.pools {
            Pools::F16(p) => attention(&self.shape, &p.k[layer], &p.v[layer], qkv, shape, batch),
            Pools::F32(p) => attention(&self.shape, &p.k[layer], &p.v[layer], qkv, shape, batch),
        })
    }
}

/// Floats in one slot (all KV heads of one token).
fn slot_width(pool: &KvCacheShape) -> usize {
    pool.num_kv_heads * pool.head_dim
}

/// Offset in the K pool of the transposed tile of `block` and `kv_head`.
fn k_tile(pool: &KvCacheShape, block: usize, kv_head: usize) -> usize {
    (block * pool.num_kv_heads + kv_head) * pool.head_dim * pool.block_size
}

fn write<T: KvValue>(
    pool: &KvCacheShape,
    k_pool: &mut [T],
    v_pool: &mut [T],
    qkv: &CpuTensor,
    shape: &AttentionShape,
    slot_mapping: &[u32],
) -> Result<()> {
    let width = slot_width(pool);
    let k_start = shape.num_heads * shape.head_dim;
    let num_slots = pool.num_blocks * pool.block_size;
    for (row, &slot) in qkv.data.chunks(qkv.cols).zip(slot_mapping) {
        let slot = slot as usize;
        if slot >= num_slots {
            return Err(ModelError::InvalidBatch(format!(
                "KV slot {slot} outside the pool of {num_slots}"
            )));
        }
        let (k, v) = (
            &row[k_start..k_start + width],
            &row[k_start + width..k_start + 2 * width],
        );
        let (block, offset) = (slot / pool.block_size, slot % pool.block_size);
        for (kv_head, k) in k.chunks_exact(pool.head_dim).enumerate() {
            let tile = k_tile(pool, block, kv_head);
            for (i, &x) in k.iter().enumerate() {
                k_pool[tile + i * pool.block_size + offset] = T::from_f32(x);
            }
        }
        for (d, &x) in v_pool[slot * width..(slot + 1) * width].iter_mut().zip(v) {
            *d = T::from_f32(x);
        }
    }
    Ok(())
}

/// The keys of positions `range` of a sequence (its block `table`), for one
/// KV head: the runs of its K tiles and the offsets of its V rows, in
/// position order.
fn gather_keys(
    pool: &KvCacheShape,
    table: &[u32],
    kv_head: usize,
    range: std::ops::RangeInclusive<usize>,
    keys: &mut Vec<KeyRun>,
    v_rows: &mut Vec<usize>,
) {
    let (bs, d, width) = (pool.block_size, pool.head_dim, slot_width(pool));
    keys.clear();
    v_rows.clear();
    let (mut j, last) = range.into_inner();
    while j <= last {
        let block = table[j / bs] as usize;
        let start = j % bs;
        let len = (bs - start).min(last + 1 - j);
        keys.push(KeyRun {
            tile: k_tile(pool, block, kv_head),
            start,
            len,
        });
        v_rows.extend((start..start + len).map(|o| (block * bs + o) * width + kv_head * d));
        j += len;
    }
}

fn attention<T: KvValue>(
    pool: &KvCacheShape,
    k_pool: &[T],
    v_pool: &[T],
    qkv: &CpuTensor,
    shape: &AttentionShape,
    batch: &FlatBatch,
) -> CpuTensor {
    let d = shape.head_dim;
    let h = shape.num_heads;
    let group = h / shape.num_kv_heads;

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
        || (Vec::new(), Vec::new(), Vec::new()),
        |(keys, v_rows, scores), (item, heads_out)| {
            let (t, kv_head) = (item / shape.num_kv_heads, item % shape.num_kv_heads);
            let (s, pos) = token_seq[t];
            let table = &batch.seqs[s].block_table;
            let first = match shape.sliding_window {
                Some(w) => (pos + 1).saturating_sub(w),
                None => 0,
            };
            gather_keys(pool, table, kv_head, first..=pos, keys, v_rows);
            let q0 = t * qkv.cols + kv_head * group * d;
            let heads = HeadGroup {
                q: &qkv.data[q0..q0 + group * d],
                keys,
                v_rows,
                k_pool,
                v_pool,
                head_dim: d,
                block_size: pool.block_size,
                scale: shape.scale,
                softcap: shape.softcap,
            };
            kernel::attend(&heads, scores, heads_out);
        },
    );
    CpuTensor::new(out, batch.num_tokens(), h * d)
}
