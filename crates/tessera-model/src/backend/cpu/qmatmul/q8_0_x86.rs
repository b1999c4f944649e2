//! The x86-64 Q8_0 kernels: eight weight rows in the eight lanes of a vector,
//! up to four activation rows per call reusing each weight load.
//!
//! Per block, each activation row's integer dot is accumulated in i32 lanes
//! (one lane per weight row), then converted and added with one FMA, which is
//! the scalar reference's `(dw * dy).mul_add(sumi, acc)` lane by lane.
//!
//! - AVX2: `u8 x i8` pairs through `maddubs` with the sign moved onto the
//!   activation (`|w| * sign(y, w) = w * y`; pairs stay within i16).
//! - AVX-512 VNNI (on 256-bit vectors): `vpdpbusd` on `w + 128` (unsigned),
//!   minus `128 * sum(y)` per block: four products per lane straight into i32.

use std::arch::x86_64::*;

use super::activations::Q8Rows;
use super::q8_0::{Q8_0Matrix, ROWS};
use super::x86::{broadcast_run, run_tile, scale_add, unrolled, Kernels, Level};
use super::{GroupKernel, QK, ROW_TILE};

/// Runs the best kernel at `level` or below; false when only the portable
/// code applies.
pub(super) fn dot_group_at(
    level: Level,
    w: &Q8_0Matrix,
    group: usize,
    y: &Q8Rows,
    row0: usize,
    out: &mut [f32],
) -> bool {
    assert!(out.len() <= ROW_TILE * ROWS && out.len().is_multiple_of(ROWS));
    let kernels = Kernels {
        avx2: &[avx2::<1>, avx2::<2>, avx2::<3>, avx2::<4>],
        vnni: &[vnni::<1>, vnni::<2>, vnni::<3>, vnni::<4>],
    };
    // SAFETY: the kernels check their indices.
    unsafe { run_tile(&kernels, level, w, (group, y, row0), out, ROWS) }
}

/// The best kernel for this CPU.
pub(super) fn dot_group(
    w: &Q8_0Matrix,
    group: usize,
    y: &Q8Rows,
    row0: usize,
    out: &mut [f32],
) -> bool {
    dot_group_at(Level::Vnni, w, group, y, row0, out)
}

/// Checks every index the kernels use.
fn check(w: &Q8_0Matrix, group: usize, y: &Q8Rows, row0: usize, tile: usize) {
    let blocks = w.blocks();
    assert!((group + 1) * blocks <= w.qs.len() && w.d.len() == w.qs.len());
    assert!(y.blocks == blocks && (row0 + tile) * blocks <= y.qs.len());
    assert!(y.d.len() == y.qs.len() && y.sums.len() == y.qs.len());
}

/// # Safety
/// The CPU must support AVX2 and FMA; `out` holds `R * ROWS` values.
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<const R: usize>(
    w: &Q8_0Matrix,
    group: usize,
    y: &Q8Rows,
    row0: usize,
    out: &mut [f32],
) {
    check(w, group, y, row0, R);
    assert!(out.len() >= R * ROWS);
    let blocks = w.blocks();
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..blocks {
        let at = group * blocks + b;
        let runs = w.qs.as_ptr().add(at).cast::<__m256i>();
        let mut sumi = [_mm256_setzero_si256(); R];
        for k in 0..QK / 4 {
            let x = _mm256_loadu_si256(runs.add(k));
            // |-128| wraps to 128 as an unsigned byte: still right.
            let ax = _mm256_abs_epi8(x);
            unrolled::<R>(|r| {
                let sy = _mm256_sign_epi8(broadcast_run(y, (row0 + r) * blocks + b, k), x);
                // Pairs are at most 2 * 128 * 127, within i16.
                let pairs = _mm256_maddubs_epi16(ax, sy);
                sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(pairs, ones));
            });
        }
        let dw = _mm256_loadu_ps(w.d.as_ptr().add(at).cast());
        unrolled::<R>(|r| {
            // `check` bounds the index.
            let dy = y.d.get_unchecked((row0 + r) * blocks + b)[0];
            acc[r] = scale_add(acc[r], dw, dy, sumi[r]);
        });
    }
    for (r, a) in acc.iter().enumerate() {
        _mm256_storeu_ps(out.as_mut_ptr().add(r * ROWS), *a);
    }
}

/// # Safety
/// The CPU must support AVX2, FMA, AVX-512 VNNI and AVX-512 VL; `out` holds
/// `R * ROWS` values.
#[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
unsafe fn vnni<const R: usize>(
    w: &Q8_0Matrix,
    group: usize,
    y: &Q8Rows,
    row0: usize,
    out: &mut [f32],
) {
    check(w, group, y, row0, R);
    assert!(out.len() >= R * ROWS);
    let blocks = w.blocks();
    let flip = _mm256_set1_epi8(i8::MIN);
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..blocks {
        let at = group * blocks + b;
        let runs = w.qs.as_ptr().add(at).cast::<__m256i>();
        // Two chains per row (even and odd runs): one chain of eight
        // dependent `vpdpbusd` per block would wait on its latency.
        let mut sumi = [[_mm256_setzero_si256(); 2]; R];
        for k in 0..QK / 4 {
            // w + 128 as an unsigned byte.
            let xu = _mm256_xor_si256(_mm256_loadu_si256(runs.add(k)), flip);
            unrolled::<R>(|r| {
                let run = broadcast_run(y, (row0 + r) * blocks + b, k);
                sumi[r][k % 2] = _mm256_dpbusd_epi32(sumi[r][k % 2], xu, run);
            });
        }
        let dw = _mm256_loadu_ps(w.d.as_ptr().add(at).cast());
        unrolled::<R>(|r| {
            let yi = (row0 + r) * blocks + b;
            let s = _mm256_add_epi32(sumi[r][0], sumi[r][1]);
            // `check` bounds `yi`.
            let s = _mm256_sub_epi32(s, _mm256_set1_epi32(128 * *y.sums.get_unchecked(yi)));
            acc[r] = scale_add(acc[r], dw, y.d.get_unchecked(yi)[0], s);
        });
    }
    for (r, a) in acc.iter().enumerate() {
        _mm256_storeu_ps(out.as_mut_ptr().add(r * ROWS), *a);
    }
}

const _: () = assert!(QK == 32 && ROWS == 8);
