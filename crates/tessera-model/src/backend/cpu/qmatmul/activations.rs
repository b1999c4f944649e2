//! Activations quantized to 8 bits per value, 32 values per block, as candle's
//! `BlockQ8_0::from_float` and `BlockQ8_1::from_float` do (Q8_1 adds `s`).

use half::f16;
use rayon::prelude::*;

use super::{GROUP, QK};

/// `m` rows of `blocks` blocks each, index `row * blocks + block`.
pub(super) struct Q8Rows {
    pub blocks: usize,
    pub qs: Vec<[i8; QK]>,
    /// Scale, rounded through f16 as candle stores it, once per lane of the
    /// four-row layout (Q4_0's kernel loads two blocks' scales as one vector).
    pub d: Vec<[f32; GROUP]>,
    /// Q8_1's `sum(qs) * d`, rounded through f16 as candle computes it.
    pub s: Vec<f32>,
    /// `sum(qs)` exactly: Q4_0's kernel subtracts `8 * sum` from its unsigned dot.
    pub sums: Vec<i32>,
}

/// Quantizes `m` rows of `x` (rows in parallel).
pub(super) fn quantize(x: &[f32], m: usize, blocks: usize) -> Q8Rows {
    let n = m * blocks;
    let mut y = Q8Rows {
        blocks,
        qs: vec![[0i8; QK]; n],
        d: vec![[0f32; GROUP]; n],
        s: vec![0f32; n],
        sums: vec![0; n],
    };
    if m > 1 {
        x.par_chunks(blocks * QK)
            .zip(y.qs.par_chunks_mut(blocks))
            .zip(y.d.par_chunks_mut(blocks))
            .zip(y.s.par_chunks_mut(blocks))
            .zip(y.sums.par_chunks_mut(blocks))
            .for_each(|((((xs, qs), d), s), sums)| quantize_row(xs, qs, d, s, sums));
    } else {
        quantize_row(x, &mut y.qs, &mut y.d, &mut y.s, &mut y.sums);
    }
    y
}

fn quantize_row(
    x: &[f32],
    qs: &mut [[i8; QK]],
    d: &mut [[f32; GROUP]],
    s: &mut [f32],
    sums: &mut [i32],
) {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: AVX2 is present.
        return unsafe { avx2::quantize_row(x, qs, d, s, sums) };
    }
    quantize_row_portable(x, qs, d, s, sums);
}

pub(super) fn quantize_row_portable(
    x: &[f32],
    qs: &mut [[i8; QK]],
    d: &mut [[f32; GROUP]],
    s: &mut [f32],
    sums: &mut [i32],
) {
    for_each_block(x, qs, d, s, sums, |xs, qs| {
        let (scale16, inverse) = block_scale(amax_portable(xs));
        round_block_portable(xs, inverse, qs);
        (scale16, qs.iter().map(|&q| i32::from(q)).sum())
    });
}

/// The loop both row quantizers share: `block` rounds one block into its
/// bytes and returns its f16 scale and the sum of its bytes; the scales and
/// sums are stored here. Inlined, so that an AVX2 caller's closure is
/// compiled with AVX2.
#[inline(always)]
fn for_each_block(
    x: &[f32],
    qs: &mut [[i8; QK]],
    d: &mut [[f32; GROUP]],
    s: &mut [f32],
    sums: &mut [i32],
    mut block: impl FnMut(&[f32; QK], &mut [i8; QK]) -> (f16, i32),
) {
    let blocks = x.chunks_exact(QK).zip(qs).zip(d).zip(s).zip(sums);
    for ((((xs, qs), d), s), block_sum) in blocks {
        let xs: &[f32; QK] = xs.try_into().expect("chunks_exact gives whole blocks");
        let (scale16, sum) = block(xs, qs);
        (*d, *s) = block_terms(scale16, sum);
        *block_sum = sum;
    }
}

/// A block's scale (rounded through f16, as candle stores it) and the
/// inverse of the unrounded scale the values are multiplied by.
#[inline(always)]
fn block_scale(amax: f32) -> (f16, f32) {
    let scale = amax / 127.0;
    let inverse = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    (f16::from_f32(scale), inverse)
}

/// The stored scale (once per lane of the four-row layout) and Q8_1's `s`.
#[inline(always)]
fn block_terms(scale16: f16, sum: i32) -> ([f32; GROUP], f32) {
    let s = (f16::from_f32(sum as f32) * scale16).to_f32();
    ([scale16.to_f32(); GROUP], s)
}

/// The largest |x| of a block (the same in any order).
pub(super) fn amax(xs: &[f32; QK]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: AVX2 is present.
        return unsafe { avx2::amax(xs) };
    }
    amax_portable(xs)
}

pub(super) fn amax_portable(xs: &[f32; QK]) -> f32 {
    let mut lanes = [0f32; 8];
    for chunk in xs.chunks_exact(8) {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l = l.max(v.abs());
        }
    }
    lanes.iter().fold(0f32, |a, &v| a.max(v))
}

/// `qs[i] = round_to_i8(xs[i] * inverse)`.
pub(super) fn round_block(xs: &[f32; QK], inverse: f32, qs: &mut [i8; QK]) {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: AVX2 is present.
        return unsafe { avx2::round_block(xs, inverse, qs) };
    }
    round_block_portable(xs, inverse, qs);
}

pub(super) fn round_block_portable(xs: &[f32; QK], inverse: f32, qs: &mut [i8; QK]) {
    for (q, &v) in qs.iter_mut().zip(xs) {
        *q = round_to_i8(v * inverse);
    }
}

/// `v.round() as i8` (halves away from zero, saturating, NaN to 0) without
/// the libm call `round` compiles to, which cost more than the matmul's
/// quantization itself.
#[inline]
pub(super) fn round_to_i8(v: f32) -> i8 {
    // Toward zero; saturates, NaN to 0. `v - t` is exact.
    let t = v as i32 as f32;
    let r = if (v - t).abs() >= 0.5 {
        t + 1f32.copysign(v)
    } else {
        t
    };
    r as i8
}

/// The block quantizer's two loops eight lanes wide: the same values as the
/// portable code (max is exact in any order; the rounding is done exactly as
/// `round_to_i8` does it, lane by lane).
#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    use super::{GROUP, QK};

    /// Whether this CPU has AVX2 (checked once).
    pub fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| is_x86_feature_detected!("avx2"))
    }

    /// The whole row, block by block, each block's values loaded once and
    /// every step in vector registers; the same values as
    /// [`quantize_row_portable`](super::quantize_row_portable).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize_row(
        x: &[f32],
        qs: &mut [[i8; QK]],
        d: &mut [[f32; GROUP]],
        s: &mut [f32],
        sums: &mut [i32],
    ) {
        super::for_each_block(x, qs, d, s, sums, |xs, qs| {
            let (scale16, inverse) = super::block_scale(amax(xs));
            let q = round_lanes(xs, inverse);
            let sum = horizontal_sum(_mm256_add_epi32(
                _mm256_add_epi32(q[0], q[1]),
                _mm256_add_epi32(q[2], q[3]),
            ));
            store_i8(q, qs);
            (scale16, sum)
        });
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub unsafe fn amax(xs: &[f32; QK]) -> f32 {
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
        let p = xs.as_ptr();
        let mut m = _mm256_setzero_ps();
        for i in 0..QK / 8 {
            // max(m, NaN) keeps m, as f32::max does.
            m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(p.add(8 * i)), abs), m);
        }
        // Max is exact in any order, and `m` holds no NaN.
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        _mm_cvtss_f32(m)
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn round_block(xs: &[f32; QK], inverse: f32, qs: &mut [i8; QK]) {
        store_i8(round_lanes(xs, inverse), qs);
    }

    /// `round_to_i8(xs[i] * inverse)` as i32 lanes, eight values a vector.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn round_lanes(xs: &[f32; QK], inverse: f32) -> [__m256i; QK / 8] {
        let inv = _mm256_set1_ps(inverse);
        let half = _mm256_set1_ps(0.5);
        let one = _mm256_set1_ps(1.0);
        let sign_bit = _mm256_set1_ps(-0.0);
        let p = xs.as_ptr();
        std::array::from_fn(|i| {
            let v = _mm256_mul_ps(_mm256_loadu_ps(p.add(8 * i)), inv);
            // Toward zero, then away from zero when the dropped part is >= 0.5
            // (`v - t` is exact).
            let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
            let frac = _mm256_andnot_ps(sign_bit, _mm256_sub_ps(v, t));
            let step = _mm256_or_ps(one, _mm256_and_ps(v, sign_bit));
            let up = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, half);
            let r = _mm256_add_ps(t, _mm256_and_ps(up, step));
            // Saturate to i8's range; NaN (unordered) becomes 0.
            let r = _mm256_min_ps(
                _mm256_max_ps(r, _mm256_set1_ps(-128.0)),
                _mm256_set1_ps(127.0),
            );
            let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(v, v));
            _mm256_cvtps_epi32(r)
        })
    }

    /// Narrows four vectors of i32 in i8's range to 32 bytes, in order.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn store_i8(q: [__m256i; QK / 8], qs: &mut [i8; QK]) {
        // The packs interleave 128-bit halves: dword k of the result holds
        // values 4k..4k + 4 of vector k % 4's half k / 4.
        let bytes = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let bytes = _mm256_permutevar8x32_epi32(bytes, order);
        _mm256_storeu_si256(qs.as_mut_ptr().cast(), bytes);
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn horizontal_sum(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }
}
