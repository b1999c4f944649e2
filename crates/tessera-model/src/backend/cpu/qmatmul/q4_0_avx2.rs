//! The Q4_0 AVX2 kernel: the scalar reference's arithmetic, integer dots in SIMD.
//!
//! Two blocks per iteration, so that one horizontal add turns
//! both blocks' eight pair sums into per-row integer dots; their float terms
//! are computed eight lanes wide and added to the running sums one block at a
//! time, as the scalar loop adds them.

use std::arch::x86_64::*;

use super::activations::Q8Rows;
use super::nibbles::avx2::{broadcast, unpack};
use super::q4_0::Q4_0Matrix;
use super::{GroupKernel, GROUP, QK};

/// Dot products of weight group `group` with activation rows `row0..row0 + R`.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn dot_group<const R: usize>(
    w: &Q4_0Matrix,
    group: usize,
    y: &Q8Rows,
    row0: usize,
    out: &mut [[f32; GROUP]],
) {
    let blocks = w.blocks();
    let base = group * blocks;
    // Every index below is within these bounds (the raw loads read two
    // consecutive blocks' scales, b + 1 < blocks).
    assert!(base + blocks <= w.nibbles.len() && w.d.len() == w.nibbles.len());
    assert!(out.len() >= R && (row0 + R) * blocks <= y.qs.len());
    assert!(y.d.len() == y.qs.len() && y.sums.len() == y.qs.len());

    let order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    let mut acc = [_mm_setzero_ps(); R];
    let mut b = 0;
    while b + 2 <= blocks {
        let (w0, w1) = (
            unpack(&w.nibbles[base + b]),
            unpack(&w.nibbles[base + b + 1]),
        );
        let dx = _mm256_loadu_ps(w.d.as_ptr().add(base + b).cast());
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let yi = (row0 + r) * blocks + b;
            let sums = _mm256_hadd_epi32(pair_sums(&w0, y, yi), pair_sums(&w1, y, yi + 1));
            // Lanes 0..4: block b's rows 0..4; lanes 4..8: block b + 1's.
            let sumi = _mm256_permutevar8x32_epi32(sums, order);
            let dy = _mm256_loadu_ps(y.d.as_ptr().add(yi).cast());
            let term = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sumi), dx), dy);
            *acc_r = _mm_add_ps(*acc_r, _mm256_castps256_ps128(term));
            *acc_r = _mm_add_ps(*acc_r, _mm256_extractf128_ps::<1>(term));
        }
        b += 2;
    }
    if b < blocks {
        // An odd last block: the same steps with a zero partner block.
        let w0 = unpack(&w.nibbles[base + b]);
        let dx = _mm256_castps128_ps256(_mm_loadu_ps(w.d[base + b].as_ptr()));
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let yi = (row0 + r) * blocks + b;
            let sums = _mm256_hadd_epi32(pair_sums(&w0, y, yi), _mm256_setzero_si256());
            let sumi = _mm256_permutevar8x32_epi32(sums, order);
            let dy = _mm256_castps128_ps256(_mm_loadu_ps(y.d[yi].as_ptr()));
            let term = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sumi), dx), dy);
            *acc_r = _mm_add_ps(*acc_r, _mm256_castps256_ps128(term));
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        _mm_storeu_ps(o.as_mut_ptr(), a);
    }
}

/// Eight i32 partial dots of one block with activation block `yi`: row `l`'s
/// `sum((q - 8) * a)` is the sum of lanes `2l` and `2l + 1`.
#[target_feature(enable = "avx2")]
#[inline]
fn pair_sums(x: &[__m256i; 4], y: &Q8Rows, yi: usize) -> __m256i {
    let a = broadcast(&y.qs[yi]);
    // Each pair sum fits i16 (2 * 15 * 128 = 3840), and so do four of them
    // (15360): the adds below never wrap.
    let p0 = _mm256_maddubs_epi16(x[0], a[0]);
    let p1 = _mm256_maddubs_epi16(x[1], a[1]);
    let p2 = _mm256_maddubs_epi16(x[2], a[2]);
    let p3 = _mm256_maddubs_epi16(x[3], a[3]);
    let sum16 = _mm256_add_epi16(_mm256_add_epi16(p0, p1), _mm256_add_epi16(p2, p3));
    let unsigned = _mm256_madd_epi16(sum16, _mm256_set1_epi16(1));
    // `8 * sum(a)` off the even lane of each pair (the odd lanes get 0).
    let offset = _mm256_set1_epi64x(i64::from((8 * y.sums[yi]) as u32));
    _mm256_sub_epi32(unsigned, offset)
}

const _: () = assert!(QK == 32 && GROUP == 4);
