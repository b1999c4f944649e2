//! Quantized matmuls for the CPU, for the weight types of the default model.
//!
//! Each type computes exactly what candle computes for it (the same bits: a
//! test), so the reference comparisons of the model stay exact, but organised
//! for many activation rows at once: weights are repacked at load into groups
//! of four rows, and one task walks every activation row over one group while
//! the group sits in L1, so a step reads the weights from memory once however
//! many sequences it batches. Each output still depends only on its own
//! activation row and weight row, so batching never changes a result.
//!
//! Q4_0, Q4_K and Q6_K (`nibbles.rs`, `superblocks.rs`) compute candle's exact
//! integer dots on candle's 8-bit activations, but order their float steps
//! for the kernel: their SIMD and scalar paths agree bit for bit, candle's
//! results to float rounding.

mod activations;
mod nibbles;
mod q4_0;
#[cfg(target_arch = "x86_64")]
mod q4_0_avx2;
mod q4_1;
#[cfg(target_arch = "x86_64")]
mod q4_1_avx2;
mod q4_k;
#[cfg(target_arch = "x86_64")]
mod q4_k_avx2;
mod q6_k;
#[cfg(target_arch = "x86_64")]
mod q6_k_avx2;
mod q8_0;
mod q8_k;
mod superblocks;

use rayon::prelude::*;

pub use q4_0::Q4_0Matrix;
pub use q4_1::Q4_1Matrix;
pub use q4_k::Q4KMatrix;
pub use q6_k::Q6KMatrix;
pub use q8_0::Q8_0Matrix;

use activations::Q8Rows;

/// Values per quantization block (Q4_1, Q8_0 and the Q8 activations alike).
const QK: usize = 32;
/// Weight rows per kernel call.
const GROUP: usize = 4;
/// Activation rows per kernel call.
const ROW_TILE: usize = 4;

/// A repacked weight matrix and its kernel.
trait GroupKernel: Sync {
    /// Output features.
    fn rows(&self) -> usize;
    /// Blocks per row.
    fn blocks(&self) -> usize;
    /// Dot products of weight rows `4 * group..` with activation rows
    /// `row0..row0 + out.len()` (at most `ROW_TILE`), one `[f32; GROUP]` each.
    fn dot_group(&self, group: usize, y: &Q8Rows, row0: usize, out: &mut [[f32; GROUP]]);
}

/// `out = x @ W^T` for `x` of `m` rows; `out` is `m` by `w.rows()`, row-major.
fn matmul_t(w: &impl GroupKernel, x: &[f32], m: usize, out: &mut [f32]) {
    let (rows, blocks) = (w.rows(), w.blocks());
    assert_eq!(x.len(), m * blocks * QK, "activation shape");
    assert_eq!(out.len(), m * rows, "output shape");
    if m == 0 {
        return;
    }
    let y = activations::quantize(x, m, blocks);
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
                    w.dot_group(group, &y, tile * ROW_TILE, tile_out);
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

/// Checks GGUF bytes against a shape; returns blocks per row.
fn check_shape(
    data: &[u8],
    rows: usize,
    cols: usize,
    block_bytes: usize,
    dtype: &str,
) -> Result<usize, String> {
    if !cols.is_multiple_of(QK) {
        return Err(format!(
            "{dtype} needs a multiple of {QK} columns, got {cols}"
        ));
    }
    let blocks = cols / QK;
    if data.len() != rows * blocks * block_bytes {
        return Err(format!(
            "{} bytes do not hold a {rows}x{cols} {dtype} matrix",
            data.len()
        ));
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_kquant;
#[cfg(test)]
mod tests_speed;
