//! The SIMD attention kernels: AVX2 + FMA + F16C (8 lanes) and AVX-512
//! (16 lanes), one generic body over [`Lanes`].
//!
//! Scores: one key per lane. K's transposed tiles give, for each dimension,
//! the values of N consecutive keys as one vector, so every query head of a
//! chunk adds `q[i] * k[i]` to its four chains with one FMA, and the chains
//! are summed lane-wise: no horizontal reduction anywhere.
//!
//! Values: one V row (a slice of four vectors) is widened once and every head
//! of the chunk adds it, weighted, to its accumulators.
//!
//! Every lane does the arithmetic of the portable kernel in its order, so all
//! three kernels give the same bits.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::kernel::{softcap, softmax, HeadGroup, KvValue};

/// The instruction sets a kernel can use, best last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Level {
    Portable,
    Avx2,
    Avx512,
}

/// The best level this CPU has (checked once).
pub(super) fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let avx2 = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        match (avx2, is_x86_feature_detected!("avx512f")) {
            (true, true) => Level::Avx512,
            (true, false) => Level::Avx2,
            _ => Level::Portable,
        }
    })
}

/// Runs the best kernel this CPU has for the group's shape; false when only
/// the portable kernel applies.
pub(super) fn attend<T: KvValue>(g: &HeadGroup<T>, scores: &mut Vec<f32>, out: &mut [f32]) -> bool {
    attend_at(level(), g, scores, out)
}

/// Runs the best kernel at `level` or below (which must not exceed the
/// CPU's); false when only the portable kernel applies.
pub(super) fn attend_at<T: KvValue>(
    level: Level,
    g: &HeadGroup<T>,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) -> bool {
    assert!(level <= self::level(), "{level:?} is not available");
    g.check();
    assert_eq!(out.len(), g.q.len());
    let (d, bs) = (g.head_dim, g.block_size);
    // SAFETY (both): the CPU has the level's features, and `check` bounds
    // every tile and row the kernel reads.
    if level >= Level::Avx512 && fits::<Avx512>(d, bs) {
        unsafe { attend_avx512(g, scores, out) };
    } else if level >= Level::Avx2 && fits::<Avx2>(d, bs) {
        unsafe { attend_avx2(g, scores, out) };
    } else {
        return false;
    }
    true
}

/// Whether the kernel on `L` handles this head size (whole slices of four
/// vectors) and block size (whole vectors of keys).
fn fits<L: Lanes>(head_dim: usize, block_size: usize) -> bool {
    head_dim.is_multiple_of(4 * L::N) && block_size.is_multiple_of(L::N)
}

/// # Safety
/// The CPU must support AVX-512F, AVX2, FMA and F16C; `g` must pass `check`.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn attend_avx512<T: KvValue>(g: &HeadGroup<T>, scores: &mut Vec<f32>, out: &mut [f32]) {
    attend_with::<Avx512, T>(g, scores, out)
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C; `g` must pass `check`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_avx2<T: KvValue>(g: &HeadGroup<T>, scores: &mut Vec<f32>, out: &mut [f32]) {
    attend_with::<Avx2, T>(g, scores, out)
}

/// Most heads per chunk at any width.
const MAX_HEADS: usize = 6;

/// The kernel body, inlined into each target-feature function above.
///
/// # Safety
/// The CPU must support `L`; `g` must pass `check`; `head_dim` and
/// `block_size` must fit `L`.
#[inline(always)]
unsafe fn attend_with<L: Lanes, T: KvValue>(
    g: &HeadGroup<T>,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let (d, bs, n, heads) = (g.head_dim, g.block_size, g.v_rows.len(), g.heads());
    if n == 0 {
        out.fill(0.0);
        return;
    }
    scores.clear();
    scores.resize(heads * n, 0.0);

    let mut lanes = [[0f32; 16]; MAX_HEADS];
    let mut j0 = 0;
    for run in g.keys {
        let end = run.start + run.len;
        // Whole vectors of keys, aligned in the block: lanes outside the
        // run are computed from stale slots and dropped.
        for o0 in (run.start / L::N * L::N..end).step_by(L::N) {
            let (lo, hi) = (o0.max(run.start), (o0 + L::N).min(end));
            let k = g.k_pool.as_ptr().add(run.tile + o0);
            let full = lo == o0 && hi == o0 + L::N;
            for h0 in (0..heads).step_by(L::HEADS) {
                let hc = (heads - h0).min(L::HEADS);
                // A whole vector of the run's keys goes straight to the
                // scores; a partial one through `lanes`.
                let (dst, stride) = if full {
                    let at = h0 * n + j0 + o0 - run.start;
                    (scores.as_mut_ptr().add(at), n)
                } else {
                    (lanes.as_mut_ptr().cast::<f32>(), 16)
                };
                let args = (g.q.as_ptr().add(h0 * d), d, k, bs, g.scale, dst, stride);
                match hc {
                    1 => scores_chunk::<L, T, 1>(args),
                    2 => scores_chunk::<L, T, 2>(args),
                    3 => scores_chunk::<L, T, 3>(args),
                    4 => scores_chunk::<L, T, 4>(args),
                    5 => scores_chunk::<L, T, 5>(args),
                    _ => scores_chunk::<L, T, 6>(args),
                }
                if !full {
                    for (h, lane) in lanes.iter().take(hc).enumerate() {
                        let row = &mut scores[(h0 + h) * n..(h0 + h + 1) * n];
                        row[j0 + lo - run.start..j0 + hi - run.start]
                            .copy_from_slice(&lane[lo - o0..hi - o0]);
                    }
                }
            }
        }
        j0 += run.len;
    }

    for p in scores.chunks_exact_mut(n) {
        softcap(p, g.softcap);
        softmax(p);
    }

    for h0 in (0..heads).step_by(L::HEADS) {
        for s in (0..d).step_by(4 * L::N) {
            let p = scores.as_ptr().add(h0 * n);
            let v = g.v_pool.as_ptr().add(s);
            let o = out.as_mut_ptr().add(h0 * d + s);
            let args = (p, n, g.v_rows, v, o, d);
            match (heads - h0).min(L::HEADS) {
                1 => values_chunk::<L, T, 1>(args),
                2 => values_chunk::<L, T, 2>(args),
                3 => values_chunk::<L, T, 3>(args),
                4 => values_chunk::<L, T, 4>(args),
                5 => values_chunk::<L, T, 5>(args),
                _ => values_chunk::<L, T, 6>(args),
            }
        }
    }
}

/// Scores of `H` heads (queries at `q`, `d` apart) for the `L::N` keys whose
/// transposed K starts at `k` (rows `bs` apart), stored at `out + h * stride`.
///
/// # Safety
/// As `attend_with`; `H <= MAX_HEADS`, `d` a multiple of 4, and `L::N`
/// floats writable at each head's `out`.
#[inline(always)]
#[allow(clippy::type_complexity)]
unsafe fn scores_chunk<L: Lanes, T: KvValue, const H: usize>(
    (q, d, k, bs, scale, out, stride): (*const f32, usize, *const T, usize, f32, *mut f32, usize),
) {
    let mut chains = [[L::zero(); 4]; H];
    for i in (0..d).step_by(4) {
        for t in 0..4 {
            let kv = L::load(k.add((i + t) * bs));
            for (h, c) in chains.iter_mut().enumerate() {
                c[t] = L::fma(L::splat(*q.add(h * d + i + t)), kv, c[t]);
            }
        }
    }
    for (h, c) in chains.iter().enumerate() {
        let sum = L::add(L::add(c[0], c[2]), L::add(c[1], c[3]));
        L::store(out.add(h * stride), L::mul(sum, L::splat(scale)));
    }
}

/// Adds, for `H` heads, each V row (four vectors from `v + row`) weighted
/// by the head's probability (head `h`'s at `p + h * n`), and stores each
/// head's slice at `o + h * d`.
///
/// # Safety
/// As `attend_with`; `H <= MAX_HEADS`.
#[inline(always)]
#[allow(clippy::type_complexity)]
unsafe fn values_chunk<L: Lanes, T: KvValue, const H: usize>(
    (p, n, rows, v, o, d): (*const f32, usize, &[usize], *const T, *mut f32, usize),
) {
    let mut acc = [[L::zero(); 4]; H];
    for (j, &r) in rows.iter().enumerate() {
        let w: [L::V; H] = std::array::from_fn(|h| L::splat(*p.add(h * n + j)));
        for c in 0..4 {
            let x = L::load(v.add(r + c * L::N));
            for (a, &wh) in acc.iter_mut().zip(&w) {
                a[c] = L::fma(wh, x, a[c]);
            }
        }
    }
    for (h, a) in acc.iter().enumerate() {
        for (c, &x) in a.iter().enumerate() {
            L::store(o.add(h * d + c * L::N), x);
        }
    }
}

/// A vector of `N` f32 lanes and the operations the kernel body uses, each
/// inlined into the calling target-feature function.
trait Lanes {
    type V: Copy;
    /// Lanes per vector.
    const N: usize;
    /// Heads per chunk: four accumulators each, within the register file.
    const HEADS: usize;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load<T: KvValue>(p: *const T) -> Self::V;
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
}

/// 256-bit vectors; 16 registers hold three heads' twelve accumulators.
struct Avx2;

impl Lanes for Avx2 {
    type V = __m256;
    const N: usize = 8;
    const HEADS: usize = 3;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load<T: KvValue>(p: *const T) -> __m256 {
        T::load8(p)
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        _mm256_storeu_ps(p, v)
    }
}

/// 512-bit vectors; 32 registers hold six heads' 24 accumulators.
struct Avx512;

impl Lanes for Avx512 {
    type V = __m512;
    const N: usize = 16;
    const HEADS: usize = MAX_HEADS;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load<T: KvValue>(p: *const T) -> __m512 {
        T::load16(p)
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        _mm512_storeu_ps(p, v)
    }
}

const _: () = assert!(Avx2::HEADS <= MAX_HEADS && Avx512::HEADS <= MAX_HEADS && Avx512::N <= 16);
