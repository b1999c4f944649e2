//! The Q6_K AVX2 kernel: the scalar reference's arithmetic, integer dots in SIMD.
//!
//! Per super-block, each activation row keeps eight i32 lanes, two per weight
//! row (`2l` and `2l + 1` for lane `l`): per 16-value sub-block, `maddubs` of
//! the unsigned 6-bit values with the activation bytes summed in i16, then
//! `madd` with the sub-block's scales. `32 * sum(sc * bsum)`, built in the same
//! pair layout, turns the unsigned dot into the dot with `q - 32`; a
//! horizontal add gives per-row integers and the float step is done four rows
//! wide. Each chunk's weights are unpacked once for the tile of activation rows.

use std::arch::x86_64::*;

use super::nibbles::avx2::{broadcast, unpack};
use super::q6_k::{Q6KBlock, Q6KMatrix};
use super::q8_k::{Q8KBlock, Q8KRows, QK_K};
use super::superblocks::SuperBlockKernel;
use super::{GROUP, QK};

/// Dot products of weight group `group` with activation rows `row0..row0 + R`.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn dot_group<const R: usize>(
    w: &Q6KMatrix,
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
        for c in 0..QK_K / QK {
            let x = unpack6(b, c);
            let (s0, s1) = (
                widen_scales(b.scales[2 * c]),
                widen_scales(b.scales[2 * c + 1]),
            );
            for (sumi_r, a_r) in sumi.iter_mut().zip(a) {
                let q = broadcast(&a_r.qs[c]);
                // A pair sum is at most 2 * 63 * 128 = 16128 in magnitude, two
                // of them 32256: the i16 adds never wrap. Times a scale of at
                // most 128, four per lane per chunk, eight chunks: < 2^28.
                let p0 = _mm256_maddubs_epi16(x[0], q[0]);
                let p1 = _mm256_maddubs_epi16(x[1], q[1]);
                let p2 = _mm256_maddubs_epi16(x[2], q[2]);
                let p3 = _mm256_maddubs_epi16(x[3], q[3]);
                let lo = _mm256_madd_epi16(_mm256_add_epi16(p0, p1), s0);
                let hi = _mm256_madd_epi16(_mm256_add_epi16(p2, p3), s1);
                *sumi_r = _mm256_add_epi32(*sumi_r, _mm256_add_epi32(lo, hi));
            }
        }
        let scales = scales_by_lane(b);
        // SAFETY: `d` is four f32s.
        let d = _mm_loadu_ps(b.d.as_ptr());
        for ((acc_r, sumi_r), a_r) in acc.iter_mut().zip(sumi).zip(a) {
            // 32 * sum(sc * bsum): at most 32 * 16 * 128 * 2048 < 2^28.
            let offset = _mm256_slli_epi32::<5>(offset_pairs(&scales, a_r));
            let total = _mm256_sub_epi32(sumi_r, offset);
            // [t0 t1 t0 t1 | t2 t3 t2 t3] -> [t0 t1 t2 t3 | ...]
            let total = _mm256_hadd_epi32(total, total);
            let total =
                _mm256_permutevar8x32_epi32(total, _mm256_setr_epi32(0, 1, 4, 5, 0, 1, 4, 5));
            let f = _mm256_castps256_ps128(_mm256_cvtepi32_ps(total));
            let term = _mm_mul_ps(f, _mm_mul_ps(d, _mm_set1_ps(a_r.d)));
            *acc_r = _mm_add_ps(*acc_r, term);
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        _mm_storeu_ps(o.as_mut_ptr(), a);
    }
}

/// Chunk `c`'s four vectors of unsigned 6-bit values: the nibbles' vectors
/// with each one's bit pair from `qh` moved to bits 4 and 5.
#[target_feature(enable = "avx2")]
#[inline]
fn unpack6(b: &Q6KBlock, c: usize) -> [__m256i; 4] {
    let low = unpack(&b.ql[c]);
    // SAFETY: `qh[c]` is 32 bytes; unaligned load.
    let h = unsafe { _mm256_loadu_si256(b.qh[c].as_ptr().cast()) };
    let bits = _mm256_set1_epi8(0x30);
    // 16-bit shifts move bits across bytes, but none that the mask keeps.
    [
        _mm256_or_si256(low[0], _mm256_and_si256(_mm256_slli_epi16::<4>(h), bits)),
        _mm256_or_si256(low[1], _mm256_and_si256(_mm256_slli_epi16::<2>(h), bits)),
        _mm256_or_si256(low[2], _mm256_and_si256(h, bits)),
        _mm256_or_si256(low[3], _mm256_and_si256(_mm256_srli_epi16::<2>(h), bits)),
    ]
}

/// One sub-block's four scales as i16, each repeated over its lane's four
/// pair sums.
#[target_feature(enable = "avx2")]
#[inline]
fn widen_scales(scales: [i8; GROUP]) -> __m256i {
    let spread = _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    let v = _mm_cvtsi32_si128(i32::from_le_bytes(scales.map(|s| s as u8)));
    _mm256_cvtepi8_epi16(_mm_shuffle_epi8(v, spread))
}

/// The scales as i16 by lane: vector `k` holds lane `l`'s scales of
/// sub-blocks `4k..4k + 4` in its 64-bit lane `l`.
#[target_feature(enable = "avx2")]
#[inline]
fn scales_by_lane(b: &Q6KBlock) -> [__m256i; 4] {
    // Within 16 bytes `[sub][lane]` of four sub-blocks: a 4x4 transpose.
    let transpose = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    let p = b.scales.as_ptr().cast::<__m128i>();
    // SAFETY: the 64 scale bytes are four 16-byte loads; unaligned.
    let v = unsafe { [0, 1, 2, 3].map(|k| _mm_loadu_si128(p.add(k))) };
    [
        _mm256_cvtepi8_epi16(_mm_shuffle_epi8(v[0], transpose)),
        _mm256_cvtepi8_epi16(_mm_shuffle_epi8(v[1], transpose)),
        _mm256_cvtepi8_epi16(_mm_shuffle_epi8(v[2], transpose)),
        _mm256_cvtepi8_epi16(_mm_shuffle_epi8(v[3], transpose)),
    ]
}

/// `sum of sc * bsum` over the sub-blocks, in the integer dot's pair layout.
#[target_feature(enable = "avx2")]
#[inline]
fn offset_pairs(scales: &[__m256i; 4], a: &Q8KBlock) -> __m256i {
    let p = a.bsums.as_ptr().cast::<i64>();
    // SAFETY: the sixteen i16 sums are four i64s; unaligned reads.
    let sums = unsafe { [0, 1, 2, 3].map(|k| p.add(k).read_unaligned()) };
    let t0 = _mm256_madd_epi16(scales[0], _mm256_set1_epi64x(sums[0]));
    let t1 = _mm256_madd_epi16(scales[1], _mm256_set1_epi64x(sums[1]));
    let t2 = _mm256_madd_epi16(scales[2], _mm256_set1_epi64x(sums[2]));
    let t3 = _mm256_madd_epi16(scales[3], _mm256_set1_epi64x(sums[3]));
    _mm256_add_epi32(_mm256_add_epi32(t0, t1), _mm256_add_epi32(t2, t3))
}

const _: () = assert!(QK == 32 && GROUP == 4 && QK_K == 256);
