//! The attention kernels against a float64 reference, on random shapes.

use proptest::prelude::*;

use half::f16;

use super::kernel::{attend_portable, HeadGroup, KeyRun, KvValue};
#[cfg(target_arch = "x86_64")]
use super::kernel_simd::{self, Level};
use super::{gather_keys, AttentionShape, KvCacheDtype, KvCacheShape};

/// Attention in f64, the textbook way, on the stored values.
fn reference<T: KvValue>(g: &HeadGroup<T>) -> Vec<f64> {
    let (d, bs) = (g.head_dim, g.block_size);
    let keys: Vec<usize> = g
        .keys
        .iter()
        .flat_map(|run| (run.start..run.start + run.len).map(move |o| run.tile + o))
        .collect();
    let mut out = Vec::new();
    for q in g.q.chunks(d) {
        let scores: Vec<f64> = keys
            .iter()
            .map(|&at| {
                q.iter()
                    .enumerate()
                    .map(|(i, &a)| f64::from(a) * f64::from(g.k_pool[at + i * bs].to_f32()))
                    .sum::<f64>()
                    * f64::from(g.scale)
            })
            .map(|s| match g.softcap.map(f64::from) {
                Some(cap) => (s / cap).tanh() * cap,
                None => s,
            })
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let denom: f64 = exps.iter().sum();
        for i in 0..d {
            out.push(
                g.v_rows
                    .iter()
                    .zip(&exps)
                    .map(|(&r, e)| e / denom * f64::from(g.v_pool[r + i].to_f32()))
                    .sum(),
            );
        }
    }
    out
}

fn values(seed: u64, n: usize, amplitude: f32) -> Vec<f32> {
    // A small LCG: reproducible inputs without threading an RNG through proptest.
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amplitude
        })
        .collect()
}

/// A layer's pools for one KV head: `blocks` blocks of `bs` slots, random
/// values (amplitude 2 for K, 1 for V).
struct Pools {
    shape: KvCacheShape,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Pools {
    fn new(seed: u64, blocks: usize, block_size: usize, head_dim: usize) -> Self {
        let shape = KvCacheShape {
            num_layers: 1,
            num_blocks: blocks,
            block_size,
            num_kv_heads: 1,
            head_dim,
            dtype: KvCacheDtype::F32,
        };
        let n = blocks * block_size * head_dim;
        Self {
            shape,
            k: values(seed ^ 1, n, 2.0),
            v: values(seed ^ 2, n, 1.0),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every kernel this CPU has agrees with the reference within float
    /// tolerance and with the portable kernel bit for bit, for head sizes
    /// the SIMD kernels take and ones they leave to the portable kernel,
    /// group sizes past a chunk, block sizes of any lane multiple, runs that
    /// start mid-block (a sliding window), blocks scattered over the pool,
    /// scores soft-capped or not.
    #[test]
    fn kernels_match_the_reference(
        head_dim in prop::sample::select(vec![8usize, 48, 64, 128]),
        block_size in prop::sample::select(vec![4usize, 8, 16, 32]),
        heads in 1usize..9,
        first in 0usize..40,
        keys in 1usize..70,
        softcap in prop::option::of(0.5f32..4.0),
        seed in any::<u64>(),
    ) {
        let blocks = (first + keys).div_ceil(block_size) + 3;
        let pools = Pools::new(seed, blocks, block_size, head_dim);
        // The blocks in a scrambled order, as a block table gives them.
        let table: Vec<u32> = (0..blocks).map(|b| ((2 * blocks - 1 - b + seed as usize % 7) % blocks) as u32).collect();
        let (mut runs, mut v_rows) = (Vec::new(), Vec::new());
        gather_keys(&pools.shape, &table, 0, first..=first + keys - 1, &mut runs, &mut v_rows);
        let q = values(seed, heads * head_dim, 1.0);
        // With and without Gemma 2's soft-cap of the scores.
        let g = group_of(&q, &runs, &v_rows, &pools.k, &pools.v, &pools.shape);
        check_kernels(&HeadGroup { softcap, ..g })?;
        // The same keys and values stored as f16.
        let (k16, v16) = (to_f16(&pools.k), to_f16(&pools.v));
        let g = group_of(&q, &runs, &v_rows, &k16, &v16, &pools.shape);
        check_kernels(&HeadGroup { softcap, ..g })?;
    }
}

fn group_of<'a, T>(
    q: &'a [f32],
    keys: &'a [KeyRun],
    v_rows: &'a [usize],
    k_pool: &'a [T],
    v_pool: &'a [T],
    shape: &KvCacheShape,
) -> HeadGroup<'a, T> {
    HeadGroup {
        q,
        keys,
        v_rows,
        k_pool,
        v_pool,
        head_dim: shape.head_dim,
        block_size: shape.block_size,
        scale: 0.125,
        softcap: None,
    }
}

fn to_f16(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

/// Every kernel against the reference on the values as stored, and against
/// the portable kernel's bits.
fn check_kernels<T: KvValue>(g: &HeadGroup<T>) -> Result<(), TestCaseError> {
    let want = reference(g);
    let mut scores = Vec::new();
    let mut portable = vec![f32::NAN; g.q.len()];
    attend_portable(g, &mut scores, &mut portable);
    for (i, (&o, &w)) in portable.iter().zip(&want).enumerate() {
        prop_assert!(
            (f64::from(o) - w).abs() < 1e-5,
            "portable: out[{i}] = {o}, want {w}"
        );
    }
    #[cfg(target_arch = "x86_64")]
    for level in [Level::Avx2, Level::Avx512] {
        if level > kernel_simd::level() {
            continue;
        }
        let mut out = vec![f32::NAN; g.q.len()];
        if kernel_simd::attend_at(level, g, &mut scores, &mut out) {
            let same = out
                .iter()
                .zip(&portable)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            prop_assert!(
                same,
                "{level:?} differs from the portable kernel: {out:?} vs {portable:?}"
            );
        }
    }
    Ok(())
}

/// The same inputs give the same bits, whatever ran before on the scratch.
#[test]
fn results_do_not_depend_on_the_scratch_space() {
    let (d, heads, bs) = (64, 3, 16);
    let pools = Pools::new(7, 4, bs, d);
    let (mut runs, mut v_rows) = (Vec::new(), Vec::new());
    gather_keys(
        &pools.shape,
        &[3, 1, 0, 2],
        0,
        5..=50,
        &mut runs,
        &mut v_rows,
    );
    let q = values(7, heads * d, 1.0);
    let g = group_of(&q, &runs, &v_rows, &pools.k, &pools.v, &pools.shape);
    let (mut fresh, mut used) = (Vec::new(), vec![1e30f32; 1000]);
    let (mut a, mut b) = (vec![0f32; heads * d], vec![0f32; heads * d]);
    super::kernel::attend(&g, &mut fresh, &mut a);
    super::kernel::attend(&g, &mut used, &mut b);
    assert_eq!(a, b);
}

/// Dense causal attention in f64 straight from the fused Q|K|V rows of one
/// sequence: what the paged cache, whatever its layout and value type, must
/// compute.
fn dense_reference(qkv: &[f32], cols: usize, shape: &AttentionShape) -> Vec<f64> {
    let (h, kvh, d) = (shape.num_heads, shape.num_kv_heads, shape.head_dim);
    let tokens = qkv.len() / cols;
    let mut out = vec![0f64; tokens * h * d];
    for t in 0..tokens {
        for head in 0..h {
            let kv = head / (h / kvh);
            let q = &qkv[t * cols + head * d..][..d];
            let key = |j: usize| &qkv[j * cols + (h + kv) * d..][..d];
            let value = |j: usize| &qkv[j * cols + (h + kvh + kv) * d..][..d];
            let scores: Vec<f64> = (0..=t)
                .map(|j| {
                    let dot: f64 = q
                        .iter()
                        .zip(key(j))
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum();
                    dot * f64::from(shape.scale)
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let denom: f64 = exps.iter().sum();
            for i in 0..d {
                out[(t * h + head) * d + i] = (0..=t)
                    .map(|j| exps[j] / denom * f64::from(value(j)[i]))
                    .sum();
            }
        }
    }
    out
}

/// The cache's write and attention together, for both value types, against
/// dense attention: a prompt over scattered blocks, then one decode token.
#[test]
fn paged_attention_matches_dense_attention() {
    use crate::backend::cpu::CpuTensor;
    use crate::batch::{FlatBatch, SeqMeta};
    let shape = AttentionShape {
        num_heads: 6,
        num_kv_heads: 2,
        head_dim: 64,
        scale: 0.125,
        sliding_window: None,
        softcap: None,
    };
    let cols = (6 + 2 * 2) * 64;
    let (bs, tokens) = (16, 45);
    let table = vec![5u32, 0, 3, 1];
    let qkv = values(11, tokens * cols, 1.0);
    let want = dense_reference(&qkv, cols, &shape);
    let flat = |range: std::ops::Range<usize>| FlatBatch {
        token_ids: vec![0; range.len()],
        positions: range.clone().map(|p| p as u32).collect(),
        slot_mapping: range
            .clone()
            .map(|p| table[p / bs] * bs as u32 + (p % bs) as u32)
            .collect(),
        seqs: vec![SeqMeta {
            query_start: 0,
            query_len: range.len(),
            context_len: range.end,
            block_table: table.clone(),
        }],
        logit_rows: vec![],
        block_size: bs,
    };
    for (dtype, tolerance) in [(KvCacheDtype::F32, 1e-5), (KvCacheDtype::F16, 2e-3)] {
        let mut cache = super::CpuKvCache::new(KvCacheShape {
            num_layers: 1,
            num_blocks: 6,
            block_size: bs,
            num_kv_heads: 2,
            head_dim: 64,
            dtype,
        })
        .expect("cache");
        // The prompt but its last token, then that token as a decode step.
        let mut got = Vec::new();
        for range in [0..tokens - 1, tokens - 1..tokens] {
            let data = qkv[range.start * cols..range.end * cols].to_vec();
            let rows = CpuTensor::new(data, range.len(), cols);
            let batch = flat(range);
            cache
                .write(0, &rows, &shape, &batch.slot_mapping)
                .expect("write");
            let out = cache
                .attention(0, &rows, &shape, &batch)
                .expect("attention");
            got.extend(out.data);
        }
        let worst = got
            .iter()
            .zip(&want)
            .map(|(&g, &w)| (f64::from(g) - w).abs())
            .fold(0f64, f64::max);
        assert!(worst < tolerance, "{dtype}: worst difference {worst}");
    }
}
