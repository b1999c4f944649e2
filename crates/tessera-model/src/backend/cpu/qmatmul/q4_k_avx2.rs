//! The Q4_K AVX2 kernel: the scalar reference's arithmetic, integer dots in SIMD.
//!
//! Per super-block, each activation row keeps eight i32 lanes, two per weight
//! row (`2l` and `2l + 1` for lane `l`): per sub-block, `maddubs` of the
//! unsigned nibbles with the activation bytes summed in i16, then `madd` with
//! the sub-block's scales. The mins' term is built in the same pair layout;
//! one horizontal add turns both into per-row integers, and the float step is
//! done four rows wide in the reference's order. Each sub-block's weights are
//! unpacked once for the whole tile of activation rows.

use std::arch::x86_64::*;

use super::nibbles::avx2::{broadcast, unpack};
use super::q4_k::{Q4KBlock, Q4KMatrix};
use super::q8_k::{Q8KBlock, Q8KRows, QK_K};
use super::superblocks::SuperBlockKernel;
use super::{GROUP, QK};

/// Dot products of weight group `group` with activation rows `row0..row0 + R`.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn dot_group<const R: usize>(
    w: &Q4KMatrix,
    group: usize,
    y: &Q8KRows,
    row0: usize,
    out: &mut [[f32; GROUP]],
) {
    let sbs = w.super_blocks();
    let base = group * sbs;
    // Every index below is within these bounds.
    assert!(base + sbs <= w.blocks.len() && out.len() >= R);
    assert!(y.super_blocks == sbs && (row0 + R) * sbs <= y.blocks.len());

    let mut acc = [_mm_setzero_ps(); R];
    for sb in 0..sbs {
        let b = &w.blocks[base + sb];
        let a: [&Q8KBlock; R] = std::array::from_fn(|r| &y.blocks[(row0 + r) * sbs + sb]);
        let mut sumi = [_mm256_setzero_si256(); R];
        for s in 0..QK_K / QK {
            let x = unpack(&b.qs[s]);
            let scales = widen_scales(b.scales[s]);
            for (sumi_r, a_r) in sumi.iter_mut().zip(a) {
                let q = broadcast(&a_r.qs[s]);
                // A pair sum is at most 2 * 15 * 128 = 3840 in magnitude, four
                // of them 15360: the i16 adds never wrap. Times a scale < 64,
                // two per lane, eight sub-blocks: < 2^25 in i32.
                let p0 = _mm256_maddubs_epi16(x[0], q[0]);
                let p1 = _mm256_maddubs_epi16(x[1], q[1]);
                let p2 = _mm256_maddubs_epi16(x[2], q[2]);
                let p3 = _mm256_maddubs_epi16(x[3], q[3]);
                let sum16 = _mm256_add_epi16(_mm256_add_epi16(p0, p1), _mm256_add_epi16(p2, p3));
                *sumi_r = _mm256_add_epi32(*sumi_r, _mm256_madd_epi16(sum16, scales));
            }
        }
        let mins = mins(b);
        // SAFETY: `d` and `dmin` are four f32s each.
        let (d, dmin) = (_mm_loadu_ps(b.d.as_ptr()), _mm_loadu_ps(b.dmin.as_ptr()));
        for ((acc_r, sumi_r), a_r) in acc.iter_mut().zip(sumi).zip(a) {
            *acc_r = _mm_add_ps(
                *acc_r,
                float_step(sumi_r, min_pairs(&mins, a_r), d, dmin, a_r),
            );
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        _mm_storeu_ps(o.as_mut_ptr(), a);
    }
}

/// One sub-block's four scales as i16, each repeated over its lane's four
/// pair sums.
#[target_feature(enable = "avx2")]
#[inline]
fn widen_scales(scales: [u8; GROUP]) -> __m256i {
    let spread = _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    let v = _mm_cvtsi32_si128(i32::from_le_bytes(scales));
    _mm256_cvtepu8_epi16(_mm_shuffle_epi8(v, spread))
}

/// The mins as i16: vector `h` holds lane `l`'s mins of sub-blocks `4h..4h + 4`
/// in its 64-bit lane `l`.
#[target_feature(enable = "avx2")]
#[inline]
fn mins(b: &Q4KBlock) -> [__m256i; 2] {
    // SAFETY: each `mins[h]` is 16 bytes; unaligned loads.
    let v = unsafe { [0, 1].map(|h| _mm_loadu_si128(b.mins[h].as_ptr().cast())) };
    [_mm256_cvtepu8_epi16(v[0]), _mm256_cvtepu8_epi16(v[1])]
}

/// `sum of m * sum(a)` over the sub-blocks, in the integer dot's pair layout:
/// lanes `2l` and `2l + 1` add up to lane `l`'s.
#[target_feature(enable = "avx2")]
#[inline]
fn min_pairs(mins: &[__m256i; 2], a: &Q8KBlock) -> __m256i {
    let p = a.sums32.as_ptr().cast::<i64>();
    // SAFETY: the eight i16 sums are two i64s; unaligned reads.
    let (s0, s1) = unsafe { (p.read_unaligned(), p.add(1).read_unaligned()) };
    // i16 products summed in pairs: at most 2 * 63 * 4096 per lane, twice.
    let lo = _mm256_madd_epi16(mins[0], _mm256_set1_epi64x(s0));
    let hi = _mm256_madd_epi16(mins[1], _mm256_set1_epi64x(s1));
    _mm256_add_epi32(lo, hi)
}

/// `sumi * (d * dy) - summ * (dmin * dy)` for the four rows, from the pair
/// layouts of both integers.
#[target_feature(enable = "avx2")]
#[inline]
fn float_step(sumi: __m256i, summ: __m256i, d: __m128, dmin: __m128, a: &Q8KBlock) -> __m128 {
    // [i0 i1 m0 m1 | i2 i3 m2 m3] -> [i0 i1 i2 i3 | m0 m1 m2 m3]
    let both = _mm256_hadd_epi32(sumi, summ);
    let both = _mm256_permutevar8x32_epi32(both, _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7));
    let f = _mm256_cvtepi32_ps(both);
    let dy = _mm_set1_ps(a.d);
    let scaled = _mm_mul_ps(_mm256_castps256_ps128(f), _mm_mul_ps(d, dy));
    let mins = _mm_mul_ps(_mm256_extractf128_ps::<1>(f), _mm_mul_ps(dmin, dy));
    _mm_sub_ps(scaled, mins)
}

const _: () = assert!(QK == 32 && GROUP == 4 && QK_K == 256);
