//! The K-quant kernels' (Q4_K, Q6_K) entry to `mod.rs`'s tiled driver: Q8_K
//! activations (one scale per 256 values), groups of four weight rows.

use super::q8_k::{self, Q8KRows, QK_K};
use super::{for_each_tile, TileShape, GROUP, ROW_TILE};

/// A repacked K-quant matrix and its kernel.
pub(super) trait SuperBlockKernel: Sync {
    /// Output features.
    fn rows(&self) -> usize;
    /// Super-blocks (256 values) per row.
    fn super_blocks(&self) -> usize;
    /// Dot products of weight rows `4 * group..` with activation rows
    /// `row0..row0 + out.len()` (at most `ROW_TILE`), one `[f32; GROUP]` each.
    fn dot_group(&self, group: usize, y: &Q8KRows, row0: usize, out: &mut [[f32; GROUP]]);
}

/// `out = x @ W^T` for `x` of `m` rows; `out` is `m` by `w.rows()`, row-major.
pub(super) fn matmul_t(w: &impl SuperBlockKernel, x: &[f32], m: usize, out: &mut [f32]) {
    let (rows, super_blocks) = (w.rows(), w.super_blocks());
    assert_eq!(x.len(), m * super_blocks * QK_K, "activation shape");
    assert_eq!(out.len(), m * rows, "output shape");
    if m == 0 {
        return;
    }
    let y = q8_k::quantize(x, m, super_blocks);
    let shape = TileShape {
        rows,
        m,
        group_rows: GROUP,
        tile: ROW_TILE,
    };
    for_each_tile(shape, out, |group, row0, results| {
        w.dot_group(group, &y, row0, results.as_chunks_mut::<GROUP>().0)
    });
}
