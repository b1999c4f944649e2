//! What the x86-64 kernels of the "rows in lanes" layouts (Q4_1, Q8_0) share:
//! the choice of instruction set, made once per process, and the two steps
//! every block goes through.
//!
//! In these layouts each 32-bit lane of a 256-bit vector holds four
//! consecutive values of one of eight weight rows, so a broadcast of four
//! activation bytes meets all eight rows at once, and the integer dot of a
//! block lands in one i32 lane per weight row, ready for one conversion and
//! FMA per eight rows.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::activations::Q8Rows;

/// The instruction sets a kernel may use, in increasing order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(super) enum Level {
    Portable,
    /// AVX2 and FMA.
    Avx2,
    /// AVX-512 VNNI and VL on top of AVX2 (`vpdpbusd` on 256-bit vectors).
    Vnni,
}

/// The best level this CPU supports (checked once).
pub(super) fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        let vnni = is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl");
        match (avx2, vnni) {
            (true, true) => Level::Vnni,
            (true, false) => Level::Avx2,
            _ => Level::Portable,
        }
    })
}

/// A kernel for `R` activation rows: `(weights, group, activations, row0,
/// out)`, `out` holding `R` runs of `O` (a run being one activation row's
/// results, or one `[f32; 4]` for the four-row layouts).
pub(super) type TileKernel<W, Y = Q8Rows, O = f32> = unsafe fn(&W, usize, &Y, usize, &mut [O]);

/// The kernels of one weight type: entry `i` of a table runs `i + 1` rows.
pub(super) struct Kernels<'a, W> {
    pub avx2: &'a [TileKernel<W>],
    pub vnni: &'a [TileKernel<W>],
}

/// Runs the best kernels at `level` or below on the `out.len() / rows8`
/// activation rows from `row0`, as many rows per call as the level's table
/// offers; false when only the portable code applies.
///
/// # Safety
/// Every kernel must check the indices it uses against `w` and `y`.
pub(super) unsafe fn run_tile<W>(
    kernels: &Kernels<W>,
    level: Level,
    w: &W,
    tile: (usize, &Q8Rows, usize),
    out: &mut [f32],
    rows8: usize,
) -> bool {
    let table = match level.min(self::level()) {
        Level::Portable => return false,
        Level::Avx2 => kernels.avx2,
        Level::Vnni => kernels.vnni,
    };
    // SAFETY: the table's level does not exceed what this CPU supports.
    call_tiles(table, w, tile, out, rows8);
    true
}

/// Calls `table`'s kernels on the `out.len() / per_row` activation rows from
/// `row0`, as many rows per call as the table offers.
///
/// # Safety
/// The CPU must support what the kernels use, and every kernel must check the
/// indices it uses against `w` and `y`.
pub(super) unsafe fn call_tiles<W, Y, O>(
    table: &[TileKernel<W, Y, O>],
    w: &W,
    (group, y, row0): (usize, &Y, usize),
    out: &mut [O],
    per_row: usize,
) {
    for (i, chunk) in out.chunks_mut(table.len() * per_row).enumerate() {
        table[chunk.len() / per_row - 1](w, group, y, row0 + i * table.len(), chunk);
    }
}

/// Runs a table of AVX2-only kernels of the four-row layouts (Q4_0, Q4_K,
/// Q6_K; `table[i]` takes `i + 1` activation rows) on a tile, if this CPU has
/// AVX2; false when only the portable code applies.
///
/// # Safety
/// Every kernel must check the indices it uses against `w` and `y`.
pub(super) unsafe fn avx2_tiles<W, Y, O>(
    table: &[TileKernel<W, Y, O>],
    w: &W,
    tile: (usize, &Y, usize),
    out: &mut [O],
) -> bool {
    if !super::activations::avx2::available() {
        return false;
    }
    // SAFETY: AVX2 is present; the caller vouches for the kernels' checks.
    call_tiles(table, w, tile, out, 1);
    true
}

/// Four activation bytes (`4k..4k + 4` of block `yi`) in every 32-bit lane.
///
/// # Safety
/// AVX2; `yi` must index `y.qs` and `k < 8`.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn broadcast_run(y: &Q8Rows, yi: usize, k: usize) -> __m256i {
    let run = y.qs.as_ptr().add(yi).cast::<i32>().add(k).read_unaligned();
    _mm256_set1_epi32(run)
}

/// Calls `body(0)`, ..., `body(R - 1)` unrolled (`R` at most 8): with each
/// index a constant, an array of per-row accumulators indexed by it stays in
/// registers, where a loop the compiler declines to unroll keeps it in memory.
#[inline(always)]
pub(super) fn unrolled<const R: usize>(mut body: impl FnMut(usize)) {
    const { assert!(R <= 8) };
    macro_rules! each {
        ($($r:literal)*) => { $( if $r < R { body($r) } )* };
    }
    each!(0 1 2 3 4 5 6 7);
}

/// `acc + (dw * dy) * sumi`, lane by lane, rounded as `mul_add` rounds.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) fn scale_add(acc: __m256, dw: __m256, dy: f32, sumi: __m256i) -> __m256 {
    let d = _mm256_mul_ps(dw, _mm256_set1_ps(dy));
    _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc)
}
