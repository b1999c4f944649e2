//! Attention of one query-head group over its keys: the work item of
//! [`super::CpuKvCache::attention`].
//!
//! The portable kernel is plain Rust; on x86-64 with AVX2 and FMA a SIMD
//! kernel (`kernel_avx2`) is chosen at run time. Both compute each head start
//! to end in position order with fixed accumulators, so a result depends only
//! on its own query and keys, never on what else is in the batch; the two
//! kernels round differently (FMA), which is why the choice is per machine,
//! never per call.
//!
//! K and V are stored as f32 or f16 ([`KvValue`]); both kernels widen each
//! value to f32 as they read it, so all arithmetic is in f32 either way.

use half::f16;

/// A value type K and V are stored in.
pub(crate) trait KvValue: Copy + Default + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
    /// Eight consecutive values from `p`, widened to f32.
    ///
    /// # Safety
    /// The CPU must support AVX (and F16C for f16); `p..p + 8` must be readable.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl KvValue for f32 {
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline]
    fn from_f32(v: f32) -> Self {
        v
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        std::arch::x86_64::_mm256_loadu_ps(p)
    }
}

impl KvValue for f16 {
    #[inline]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
    }
}

/// The query heads sharing one KV head, and the keys they attend to.
pub(super) struct HeadGroup<'a, T> {
    /// `heads * head_dim` query values, head after head.
    pub q: &'a [f32],
    /// Offsets into the pools of the K and V rows, in position order.
    pub rows: &'a [usize],
    pub k_pool: &'a [T],
    pub v_pool: &'a [T],
    pub head_dim: usize,
    pub scale: f32,
}

/// Writes each head's attention output (`heads * head_dim` values) to `out`.
/// `scores` is scratch space, reused across calls.
pub(super) fn attend<T: KvValue>(g: &HeadGroup<T>, scores: &mut Vec<f32>, out: &mut [f32]) {
    debug_assert_eq!(out.len(), g.q.len());
    #[cfg(target_arch = "x86_64")]
    if super::kernel_avx2::available() && super::kernel_avx2::attend(g, scores, out) {
        return;
    }
    attend_portable(g, scores, out);
}

/// The portable kernel.
pub(super) fn attend_portable<T: KvValue>(
    g: &HeadGroup<T>,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let d = g.head_dim;
    for (h, o) in out.chunks_mut(d).enumerate() {
        let q = &g.q[h * d..(h + 1) * d];
        scores.clear();
        scores.extend(
            g.rows
                .iter()
                .map(|&r| dot(q, &g.k_pool[r..r + d]) * g.scale),
        );
        softmax(scores);
        let terms = g
            .rows
            .iter()
            .zip(scores.iter())
            .map(|(&r, &p)| (p, &g.v_pool[r..r + d]));
        weighted_sum(o, terms);
    }
}

/// In place: `exp(s - max) / sum` over `scores`.
pub(super) fn softmax(scores: &mut [f32]) {
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    for s in scores.iter_mut() {
        *s -= max;
    }
    super::super::vexp::exp_in_place(scores);
    let mut denom = 0f32;
    for s in scores.iter() {
        denom += *s;
    }
    for s in scores.iter_mut() {
        *s /= denom;
    }
}

/// `o = sum of w * v` over `terms`, each element summed in term order. The
/// common head sizes get a fixed-size accumulator the compiler keeps in
/// registers instead of reloading `o` for every term; the bits are the same.
fn weighted_sum<'a, T: KvValue>(o: &mut [f32], terms: impl Iterator<Item = (f32, &'a [T])>) {
    match o.len() {
        64 => weighted_sum_fixed::<64, T>(o, terms),
        128 => weighted_sum_fixed::<128, T>(o, terms),
        _ => {
            o.fill(0.0);
            for (w, v) in terms {
                for (acc, x) in o.iter_mut().zip(v) {
                    *acc += w * x.to_f32();
                }
            }
        }
    }
}

fn weighted_sum_fixed<'a, const D: usize, T: KvValue>(
    o: &mut [f32],
    terms: impl Iterator<Item = (f32, &'a [T])>,
) {
    let mut acc = [0f32; D];
    for (w, v) in terms {
        for (a, x) in acc.iter_mut().zip(&v[..D]) {
            *a += w * x.to_f32();
        }
    }
    o.copy_from_slice(&acc);
}

/// `a . b` with eight running sums, combined pairwise at the end: a fixed order
/// (so results never depend on the batch) that the compiler can keep in SIMD
/// lanes, unlike one sequential sum whose every add waits on the last.
fn dot<T: KvValue>(a: &[f32], b: &[T]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (a_rest, b_rest) = (a_chunks.remainder(), b_chunks.remainder());
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i].to_f32();
        }
    }
    for (i, (x, y)) in a_rest.iter().zip(b_rest).enumerate() {
        acc[i] += x * y.to_f32();
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}
