//! The matmul driver of the K-quant kernels (Q4_K, Q6_K): `mod.rs`'s scheme
//! (groups of four weight rows, tiles of activation rows, one task per run of
//! groups) over Q8_K activations, one scale per 256 values.

use rayon::prelude::*;

use super::q8_k::{self, Q8KRows, QK_K};
use super::{GROUP, ROW_TILE};

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
    for_each_tile(rows, m, out, |group, row0, tile| {
        w.dot_group(group, &y, row0, tile)
    });
}

/// Calls `dot(group, row0, tile)` for every group of weight rows and every
/// tile of activation rows, groups spread over rayon's threads, and scatters
/// the tiles into `out` (`m` by `rows`). Where a result lands never depends
/// on the thread that computed it.
fn for_each_tile(
    rows: usize,
    m: usize,
    out: &mut [f32],
    dot: impl Fn(usize, usize, &mut [[f32; GROUP]]) + Sync,
) {
    let groups = rows.div_ceil(GROUP);
    // Enough tasks for rayon to balance, few enough to keep overhead low.
    let per_task = groups.div_ceil(rayon::current_num_threads() * 8).max(1);
    // Results per group, activation row, lane; scattered into `out` below.
    let mut by_group = vec![[0f32; GROUP]; groups * m];
    by_group
        .par_chunks_mut(per_task * m)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (i, group_out) in chunk.chunks_mut(m).enumerate() {
                let group = task * per_task + i;
                for (tile, tile_out) in group_out.chunks_mut(ROW_TILE).enumerate() {
                    dot(group, tile * ROW_TILE, tile_out);
                }
            }
        });
    let scatter = |(r, out_row): (usize, &mut [f32])| {
        for (group, cols) in out_row.chunks_mut(GROUP).enumerate() {
            cols.copy_from_slice(&by_group[group * m + r][..cols.len()]);
        }
    };
    if m > 1 {
        out.par_chunks_mut(rows).enumerate().for_each(scatter);
    } else {
        out.chunks_mut(rows).enumerate().for_each(scatter);
    }
}

/// Checks GGUF bytes against a shape; returns super-blocks per row.
pub(super) fn check_shape(
    data: &[u8],
    rows: usize,
    cols: usize,
    block_bytes: usize,
    dtype: &str,
) -> Result<usize, String> {
    if !cols.is_multiple_of(QK_K) {
        return Err(format!(
            "{dtype} needs a multiple of {QK_K} columns, got {cols}"
        ));
    }
    let super_blocks = cols / QK_K;
    if Some(data.len()) != rows.checked_mul(super_blocks * block_bytes) {
        return Err(format!(
            "{} bytes do not hold a {rows}x{cols} {dtype} matrix",
            data.len()
        ));
    }
    Ok(super_blocks)
}
