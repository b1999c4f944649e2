//! The AVX2 kernel: the scalar reference's arithmetic, integer dots in SIMD.
//!
//! Two blocks are done per iteration so that one horizontal add turns both
//! blocks' eight pair sums into per-row integer dots; their float terms are
//! computed eight lanes wide and then added to the running sums one block at a
//! time, as the scalar loop adds them.

use std::arch::x86_64::*;

use super::activations::Q8Rows;
use super::q4_1::Q4_1Matrix;
use super::{GroupKernel, GROUP, QK};

/// Dot products of weight group `group` with activation rows `row0..row0 + R`.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn dot_group<const R: usize>(
    w: &Q4_1Matrix,
    group: usize,
    y: &Q8Rows,
    row0: usize,
    out: &mut [[f32; GROUP]],
) {
    let blocks = w.blocks();
    let base = group * blocks;
    // Every index below is within these bounds.
    assert!(base + blocks <= w.nibbles.len() && w.d.len() == w.nibbles.len());
    assert!(w.m.len() == w.nibbles.len() && out.len() >= R);
    assert!((row0 + R) * blocks <= y.qs.len());
    assert!(y.d.len() == y.qs.len() && y.s.len() == y.qs.len());

    let mut acc = [_mm_setzero_ps(); R];
    let mut b = 0;
    while b + 2 <= blocks {
        let (w0, w1) = (unpack(w, base + b), unpack(w, base + b + 1));
        let dx = _mm256_loadu_ps(w.d.as_ptr().add(base + b).cast());
        let mx = _mm256_loadu_ps(w.m.as_ptr().add(base + b).cast());
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let yi = (row0 + r) * blocks + b;
            let sums = _mm256_hadd_epi32(pair_sums(&w0, y, yi), pair_sums(&w1, y, yi + 1));
            let sumi = _mm256_permutevar8x32_epi32(sums, _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7));
            let dy = _mm256_loadu_ps(y.d.as_ptr().add(yi).cast());
            let sy = _mm256_loadu_ps(y.s.as_ptr().add(yi).cast());
            let term = float_term(sumi, dx, dy, mx, sy);
            *acc_r = _mm_add_ps(*acc_r, _mm256_castps256_ps128(term));
            *acc_r = _mm_add_ps(*acc_r, _mm256_extractf128_ps::<1>(term));
        }
        b += 2;
    }
    if b < blocks {
        // An odd last block: the same steps with a zero partner block.
        let w0 = unpack(w, base + b);
        let dx = _mm256_castps128_ps256(_mm_loadu_ps(w.d.as_ptr().add(base + b).cast()));
        let mx = _mm256_castps128_ps256(_mm_loadu_ps(w.m.as_ptr().add(base + b).cast()));
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let yi = (row0 + r) * blocks + b;
            let sums = _mm256_hadd_epi32(pair_sums(&w0, y, yi), _mm256_setzero_si256());
            let sumi = _mm256_permutevar8x32_epi32(sums, _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7));
            let dy = _mm256_castps128_ps256(_mm_loadu_ps(y.d.as_ptr().add(yi).cast()));
            let sy = _mm256_castps128_ps256(_mm_loadu_ps(y.s.as_ptr().add(yi).cast()));
            let term = float_term(sumi, dx, dy, mx, sy);
            *acc_r = _mm_add_ps(*acc_r, _mm256_castps256_ps128(term));
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        _mm_storeu_ps(o.as_mut_ptr(), a);
    }
}

/// The four 32-byte vectors of one group's block: vector `j` holds values
/// `8j..8j + 8` of each of the four rows, as unsigned bytes.
///
/// # Safety
/// AVX2; `at` must index `w.nibbles`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn unpack(w: &Q4_1Matrix, at: usize) -> [__m256i; 4] {
    let low_nibbles = _mm256_set1_epi8(0x0F);
    let p = w.nibbles.as_ptr().add(at).cast::<__m256i>();
    let (a, b) = (_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1)));
    [
        _mm256_and_si256(a, low_nibbles),
        _mm256_and_si256(_mm256_srli_epi16::<4>(a), low_nibbles),
        _mm256_and_si256(b, low_nibbles),
        _mm256_and_si256(_mm256_srli_epi16::<4>(b), low_nibbles),
    ]
}

/// Eight i32 partial dots of one block with activation block `yi`: row `l`'s
/// integer dot is the sum of lanes `2l` and `2l + 1`.
///
/// # Safety
/// AVX2; `yi` must index `y.qs`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn pair_sums(x: &[__m256i; 4], y: &Q8Rows, yi: usize) -> __m256i {
    let q = y.qs.as_ptr().add(yi).cast::<i64>();
    let y8 = |j: usize| _mm256_set1_epi64x(q.add(j).read_unaligned());
    // Each pair sum fits i16 (2 * 15 * 127 = 3810); four of them summed
    // (15240) still do, so the adds below never saturate.
    let p0 = _mm256_maddubs_epi16(x[0], y8(0));
    let p1 = _mm256_maddubs_epi16(x[1], y8(1));
    let p2 = _mm256_maddubs_epi16(x[2], y8(2));
    let p3 = _mm256_maddubs_epi16(x[3], y8(3));
    let sum16 = _mm256_add_epi16(_mm256_add_epi16(p0, p1), _mm256_add_epi16(p2, p3));
    _mm256_madd_epi16(sum16, _mm256_set1_epi16(1))
}

/// `sumi * dx * dy + mx * sy` per lane, in the scalar order (no FMA).
#[target_feature(enable = "avx2")]
#[inline]
fn float_term(sumi: __m256i, dx: __m256, dy: __m256, mx: __m256, sy: __m256) -> __m256 {
    let scaled = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sumi), dx), dy);
    _mm256_add_ps(scaled, _mm256_mul_ps(mx, sy))
}

const _: () = assert!(QK == 32 && GROUP == 4);
