//! The x86-64 Q4_1 kernels: eight weight rows in the lanes of a vector (see
//! `x86.rs`), up to eight activation rows per call reusing each unpacked block.
//!
//! Per block, each activation row's integer dot is accumulated in i32 lanes,
//! then scaled with one FMA and its min term added with another, as the
//! scalar reference does lane by lane.
//!
//! - AVX2: `maddubs` of the unsigned nibbles with the signed activations;
//!   the eight pair sums of a block stay within i16 (8 * 2 * 15 * 127 = 30480),
//!   so they are added as i16 and widened once.
//! - AVX-512 VNNI (on 256-bit vectors): `vpdpbusd`, four products per lane
//!   straight into i32, in two chains so that its latency is hidden.

use std::arch::x86_64::*;

use super::activations::Q8Rows;
use super::q4_1::{Q4_1Matrix, ROWS, TILE};
use super::x86::{broadcast_run, run_tile, scale_add, unrolled, Kernels, Level};
use super::{GroupKernel, QK};

/// Runs the best kernel at `level` or below; false when only the portable
/// code applies.
pub(super) fn dot_group_at(
    level: Level,
    w: &Q4_1Matrix,
    group: usize,
    y: &Q8Rows,
    row0: usize,
    out: &mut [f32],
) -> bool {
    assert!(out.len() <= TILE * ROWS && out.len().is_multiple_of(ROWS));
    let kernels = Kernels {
        // Four rows at a time: AVX2 has 16 registers.
        avx2: &[avx2::<1>, avx2::<2>, avx2::<3>, avx2::<4>],
        vnni: &[
            vnni::<1>, vnni::<2>, vnni::<3>, vnni::<4>, vnni::<5>, vnni::<6>, vnni::<7>, vnni::<8>,
        ],
    };
    // SAFETY: the kernels check their indices.
    unsafe { run_tile(&kernels, level, w, (group, y, row0), out, ROWS) }
}

/// The best kernel for this CPU.
pub(super) fn dot_group(
    w: &Q4_1Matrix,
    group: usize,
    y: &Q8Rows,
    row0: usize,
    out: &mut [f32],
) -> bool {
    dot_group_at(Level::Vnni, w, group, y, row0, out)
}

/// Checks every index the kernels use.
fn check(w: &Q4_1Matrix, group: usize, y: &Q8Rows, row0: usize, tile: usize, out: &[f32]) {
    let blocks = w.blocks();
    assert!((group + 1) * blocks <= w.nibbles.len());
    assert!(w.d.len() == w.nibbles.len() && w.m.len() == w.nibbles.len());
    assert!(y.blocks == blocks && (row0 + tile) * blocks <= y.qs.len());
    assert!(y.d.len() == y.qs.len() && y.s.len() == y.qs.len());
    assert!(out.len() >= tile * ROWS);
}

/// The eight runs of one group's block, unpacked: run `k` holds values
/// `4k..4k + 4` of every row as unsigned bytes.
///
/// # Safety
/// AVX2; `at` must index `w.nibbles`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn unpack(w: &Q4_1Matrix, at: usize) -> [__m256i; QK / 4] {
    let low = _mm256_set1_epi8(0x0F);
    let p = w.nibbles.as_ptr().add(at).cast::<__m256i>();
    let mut runs = [_mm256_setzero_si256(); QK / 4];
    for v in 0..QK / 8 {
        let x = _mm256_loadu_si256(p.add(v));
        runs[2 * v] = _mm256_and_si256(x, low);
        runs[2 * v + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(x), low);
    }
    runs
}

/// `acc + (dw * dy) * sumi + mw * sy` in the reference's two roundings.
///
/// # Safety
/// AVX2 and FMA; `at` must index the weights' scales, `yi` the activations'
/// (`check` asserts both).
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn block_step(
    w: &Q4_1Matrix,
    at: usize,
    y: &Q8Rows,
    yi: usize,
    acc: __m256,
    sumi: __m256i,
) -> __m256 {
    let dw = _mm256_loadu_ps(w.d.as_ptr().add(at).cast());
    let mw = _mm256_loadu_ps(w.m.as_ptr().add(at).cast());
    let acc = scale_add(acc, dw, y.d.get_unchecked(yi)[0], sumi);
    _mm256_fmadd_ps(mw, _mm256_set1_ps(*y.s.get_unchecked(yi)), acc)
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<const R: usize>(
    w: &Q4_1Matrix,
    group: usize,
    y: &Q8Rows,
    row0: usize,
    out: &mut [f32],
) {
    check(w, group, y, row0, R, out);
    let blocks = w.blocks();
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..blocks {
        let at = group * blocks + b;
        let runs = unpack(w, at);
        unrolled::<R>(|r| {
            let yi = (row0 + r) * blocks + b;
            let mut pairs = _mm256_setzero_si256();
            for (k, run) in runs.iter().enumerate() {
                let p = _mm256_maddubs_epi16(*run, broadcast_run(y, yi, k));
                pairs = _mm256_add_epi16(pairs, p);
            }
            acc[r] = block_step(w, at, y, yi, acc[r], _mm256_madd_epi16(pairs, ones));
        });
    }
    for (r, a) in acc.iter().enumerate() {
        _mm256_storeu_ps(out.as_mut_ptr().add(r * ROWS), *a);
    }
}

/// # Safety
/// The CPU must support AVX2, FMA, AVX-512 VNNI and AVX-512 VL.
#[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
unsafe fn vnni<const R: usize>(
    w: &Q4_1Matrix,
    group: usize,
    y: &Q8Rows,
    row0: usize,
    out: &mut [f32],
) {
    check(w, group, y, row0, R, out);
    let blocks = w.blocks();
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..blocks {
        let at = group * blocks + b;
        let runs = unpack(w, at);
        unrolled::<R>(|r| {
            let yi = (row0 + r) * blocks + b;
            let (mut even, mut odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            for k in (0..QK / 4).step_by(2) {
                even = _mm256_dpbusd_epi32(even, runs[k], broadcast_run(y, yi, k));
                odd = _mm256_dpbusd_epi32(odd, runs[k + 1], broadcast_run(y, yi, k + 1));
            }
            acc[r] = block_step(w, at, y, yi, acc[r], _mm256_add_epi32(even, odd));
        });
    }
    for (r, a) in acc.iter().enumerate() {
        _mm256_storeu_ps(out.as_mut_ptr().add(r * ROWS), *a);
    }
}

const _: () = assert!(QK == 32 && ROWS == 8);
