//! Attention of one query-head group over its keys: the work item of
//! [`super::CpuKvCache::attention`].
//!
//! K is stored transposed within each block (`[dim][offset]`, see the module
//! above), so a score is a column of FMAs with nothing to reduce across
//! lanes: a SIMD kernel computes 8 or 16 keys' scores at once, one key per
//! lane. V is stored row by row, and every query head of the group
//! accumulates from each V row while it is in registers.
//!
//! The arithmetic is fixed, whatever the kernel or the batch:
//! - score: four FMA chains over the dimensions (`i % 4`), summed as
//!   `(c0 + c2) + (c1 + c3)`, times the scale, soft-capped if the model says so;
//! - softmax over the head's scores, its max and sum in a fixed lane order ([`softmax`]);
//! - output: one FMA chain per dimension, over the keys in position order.
//!
//! So the portable kernel and the SIMD ones (`kernel_simd`, chosen at run
//! time) give the same bits, and a result never depends on its batch.
//! K and V are stored as f32 or f16 ([`KvValue`]) and widened as they are
//! read; all arithmetic is in f32.

use half::f16;

/// A value type K and V are stored in.
///
/// # Safety
/// The all-zero bit pattern must be a valid value equal to `Self::default()`
/// (0.0): the KV pools are allocated zeroed by the allocator, untouched.
pub(crate) unsafe trait KvValue: Copy + Default + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
    /// Eight consecutive values from `p`, widened to f32.
    ///
    /// # Safety
    /// The CPU must support AVX (and F16C for f16); `p..p + 8` must be readable.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
    /// Sixteen consecutive values from `p`, widened to f32.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `p..p + 16` must be readable.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
}

// SAFETY: all-zero bits are +0.0.
unsafe impl KvValue for f32 {
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
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512 {
        std::arch::x86_64::_mm512_loadu_ps(p)
    }
}

// SAFETY: all-zero bits are +0.0.
unsafe impl KvValue for f16 {
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
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
    }
}

/// Consecutive keys of one block: their K tile starts at `tile` in the K pool
/// (`head_dim` rows of `block_size` offsets), and they are offsets
/// `start..start + len` of it.
#[derive(Debug, Clone, Copy)]
pub(super) struct KeyRun {
    pub tile: usize,
    pub start: usize,
    pub len: usize,
}

/// The query heads sharing one KV head, and the keys they attend to.
pub(super) struct HeadGroup<'a, T> {
    /// `heads * head_dim` query values, head after head.
    pub q: &'a [f32],
    /// The keys, in position order, block by block.
    pub keys: &'a [KeyRun],
    /// Offset of each key's V row in the V pool, in position order.
    pub v_rows: &'a [usize],
    pub k_pool: &'a [T],
    pub v_pool: &'a [T],
    pub head_dim: usize,
    pub block_size: usize,
    pub scale: f32,
    /// Scores become `cap * tanh(score / cap)` before the softmax.
    pub softcap: Option<f32>,
}

impl<T> HeadGroup<'_, T> {
    /// Query heads in the group.
    pub fn heads(&self) -> usize {
        self.q.len() / self.head_dim
    }

    /// Panics unless every K tile and V row lies within its pool and the
    /// runs hold exactly the V rows' keys: the kernels index without checks.
    pub fn check(&self) {
        let (d, bs) = (self.head_dim, self.block_size);
        assert!(d > 0 && self.q.len().is_multiple_of(d));
        let (mut keys, mut last_tile) = (0, 0);
        for run in self.keys {
            assert!(run.start + run.len <= bs);
            keys += run.len;
            last_tile = last_tile.max(run.tile);
        }
        assert!(self.keys.is_empty() || last_tile + d * bs <= self.k_pool.len());
        assert_eq!(keys, self.v_rows.len());
        let last_row = self.v_rows.iter().copied().max().unwrap_or(0);
        assert!(self.v_rows.is_empty() || last_row + d <= self.v_pool.len());
    }
}

/// Writes each head's attention output (`heads * head_dim` values) to `out`.
/// `scores` is scratch space, reused across calls.
pub(super) fn attend<T: KvValue>(g: &HeadGroup<T>, scores: &mut Vec<f32>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::kernel_simd::attend(g, scores, out) {
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
    g.check();
    let (d, bs, n) = (g.head_dim, g.block_size, g.v_rows.len());
    scores.clear();
    scores.resize(g.heads() * n, 0.0);
    for (h, o) in out.chunks_exact_mut(d).enumerate() {
        let q = &g.q[h * d..(h + 1) * d];
        let p = &mut scores[h * n..(h + 1) * n];
        let offsets = g
            .keys
            .iter()
            .flat_map(|run| (run.start..run.start + run.len).map(move |at| run.tile + at));
        for (s, at) in p.iter_mut().zip(offsets) {
            let mut chains = [0f32; 4];
            for (i, &qi) in q.iter().enumerate() {
                chains[i % 4] = qi.mul_add(g.k_pool[at + i * bs].to_f32(), chains[i % 4]);
            }
            *s = ((chains[0] + chains[2]) + (chains[1] + chains[3])) * g.scale;
        }
        softcap(p, g.softcap);
        softmax(p);
        o.fill(0.0);
        for (&w, &r) in p.iter().zip(g.v_rows) {
            for (acc, v) in o.iter_mut().zip(&g.v_pool[r..r + d]) {
                *acc = w.mul_add(v.to_f32(), *acc);
            }
        }
    }
}

/// In place: `cap * tanh(s / cap)` over `scores`, if there is a cap.
pub(super) fn softcap(scores: &mut [f32], cap: Option<f32>) {
    if let Some(cap) = cap {
        super::super::ops::softcap_in_place(scores, cap);
    }
}

/// In place: `exp(s - max) / sum` over `scores`.
///
/// The max and the sum run in [`LANES`] independent lanes (the sum's lanes
/// then combined pairwise): a fixed order the compiler vectorizes, where one
/// running sum would wait on every add.
pub(super) fn softmax(scores: &mut [f32]) {
    let max = fold_lanes(scores, f32::NEG_INFINITY, f32::max);
    for s in scores.iter_mut() {
        *s -= max;
    }
    super::super::vexp::exp_in_place(scores);
    let denom = fold_lanes(scores, 0.0, |a, b| a + b);
    for s in scores.iter_mut() {
        *s /= denom;
    }
}

/// Lanes of [`softmax`]'s reductions.
const LANES: usize = 16;

/// `op` over `values` in `LANES` running lanes (value `i` into lane
/// `i % LANES`), the lanes then combined pairwise.
fn fold_lanes(values: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [init; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l = op(*l, v);
        }
    }
    for (l, &v) in lanes.iter_mut().zip(rest) {
        *l = op(*l, v);
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            lanes[i] = op(lanes[i], lanes[i + width]);
        }
    }
    lanes[0]
}
