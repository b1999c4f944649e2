//! Attention of one query-head group over its keys: the work item of
//! [`super::CpuKvCache::attention`].
//!
//! The portable kernel is plain Rust; on x86-64 with AVX2 and FMA a SIMD
//! kernel (`kernel_avx2`) is chosen at run time. Both compute each head start
//! to end in position order with fixed accumulators, so a result depends only
//! on its own query and keys, never on what else is in the batch; the two
//! kernels round differently (FMA), which is why the choice is per machine,
//! never per call.

/// The query heads sharing one KV head, and the keys they attend to.
pub(super) struct HeadGroup<'a> {
    /// `heads * head_dim` query values, head after head.
    pub q: &'a [f32],
    /// Offsets into the pools of the K and V rows, in position order.
    pub rows: &'a [usize],
    pub k_pool: &'a [f32],
    pub v_pool: &'a [f32],
    pub head_dim: usize,
    pub scale: f32,
}

/// Writes each head's attention output (`heads * head_dim` values) to `out`.
/// `scores` is scratch space, reused across calls.
pub(super) fn attend(g: &HeadGroup, scores: &mut Vec<f32>, out: &mut [f32]) {
    debug_assert_eq!(out.len(), g.q.len());
    #[cfg(target_arch = "x86_64")]
    if super::kernel_avx2::available() && super::kernel_avx2::attend(g, scores, out) {
        return;
    }
    attend_portable(g, scores, out);
}

/// The portable kernel.
pub(super) fn attend_portable(g: &HeadGroup, scores: &mut Vec<f32>, out: &mut [f32]) {
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
    let mut denom = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        denom += *s;
    }
    for s in scores.iter_mut() {
        *s /= denom;
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
