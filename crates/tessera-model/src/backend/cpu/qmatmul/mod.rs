//! Quantized matmuls for the CPU, for the GGUF weight types of common models.
//!
//! Each type computes candle's exact integer dot products on candle's 8-bit
//! activations, with its float steps ordered for the kernel: a type's SIMD
//! paths and its scalar reference agree bit for bit (proptests), candle's
//! results up to float rounding. Weights are repacked at load into groups of
//! rows, and one task walks every activation row over one group while the
//! group sits in L1, so a step reads the weights from memory once however
//! many sequences it batches. Each output still depends only on its own
//! activation row and weight row, so batching never changes a result.
//!
//! Q4_1 and Q8_0 put eight weight rows in the lanes of a vector (`x86.rs`:
//! AVX2 or AVX-512 VNNI); Q4_0, Q4_K and Q6_K use four-row groups of 4-bit
//! values (`nibbles.rs`, `superblocks.rs`: AVX2).

mod activations;
mod nibbles;
mod q4_0;
#[cfg(target_arch = "x86_64")]
mod q4_0_avx2;
mod q4_1;
#[cfg(target_arch = "x86_64")]
mod q4_1_x86;
mod q4_k;
#[cfg(target_arch = "x86_64")]
mod q4_k_avx2;
mod q6_k;
#[cfg(target_arch = "x86_64")]
mod q6_k_avx2;
mod q8_0;
#[cfg(target_arch = "x86_64")]
mod q8_0_x86;
mod q8_k;
mod superblocks;
#[cfg(target_arch = "x86_64")]
mod x86;

use rayon::prelude::*;

pub use q4_0::Q4_0Matrix;
pub use q4_1::Q4_1Matrix;
pub use q4_k::Q4KMatrix;
pub use q6_k::Q6KMatrix;
pub use q8_0::Q8_0Matrix;

use activations::Q8Rows;

/// Values per quantization block (Q4_1, Q8_0 and the Q8 activations alike).
const QK: usize = 32;
/// Weight rows per group of the 4-bit layout of Q4_0 and the K-quants.
const GROUP: usize = 4;
/// Activation rows per kernel call, unless a kernel says otherwise.
const ROW_TILE: usize = 4;

/// A repacked weight matrix and its kernel.
trait GroupKernel: Sync {
    /// Weight rows per group: the rows one kernel call computes together.
    const ROWS: usize;
    /// Most activation rows per kernel call (at most `MAX_TILE`).
    const TILE: usize = ROW_TILE;
    /// Output features.
    fn rows(&self) -> usize;
    /// Blocks per row.
    fn blocks(&self) -> usize;
    /// Dot products of weight rows `ROWS * group..` with activation rows
    /// `row0..row0 + tile` (`tile` at most `TILE`): `out` holds `tile`
    /// runs of `ROWS` results, one run per activation row.
    fn dot_group(&self, group: usize, y: &Q8Rows, row0: usize, out: &mut [f32]);
}

/// `out = x @ W^T` for `x` of `m` rows; `out` is `m` by `w.rows()`, row-major.
fn matmul_t<W: GroupKernel>(w: &W, x: &[f32], m: usize, out: &mut [f32]) {
    let (rows, blocks) = (w.rows(), w.blocks());
    assert_eq!(x.len(), m * blocks * QK, "activation shape");
    assert_eq!(out.len(), m * rows, "output shape");
    if m == 0 {
        return;
    }
    let y = activations::quantize(x, m, blocks);
    let shape = TileShape {
        rows,
        m,
        group_rows: W::ROWS,
        tile: W::TILE,
    };
    for_each_tile(shape, out, |group, row0, results| {
        w.dot_group(group, &y, row0, results)
    });
}

/// How a matmul's output splits into kernel calls.
#[derive(Clone, Copy)]
struct TileShape {
    /// Output features (weight rows).
    rows: usize,
    /// Activation rows.
    m: usize,
    /// Weight rows per group.
    group_rows: usize,
    /// Most activation rows per call.
    tile: usize,
}

/// Calls `dot(group, row0, results)` for every group of weight rows and every
/// tile of activation rows, groups spread over rayon's threads, and writes
/// each tile's results (`tile` runs of `group_rows`) into `out` (`m` by
/// `rows`). Where a result lands never depends on the thread that computed it.
fn for_each_tile(shape: TileShape, out: &mut [f32], dot: impl Fn(usize, usize, &mut [f32]) + Sync) {
    let TileShape {
        rows,
        m,
        group_rows,
        tile,
    } = shape;
    assert!(tile <= MAX_TILE && group_rows <= MAX_GROUP_ROWS);
    let groups = rows.div_ceil(group_rows);
    // Enough tasks for rayon to balance, few enough to keep overhead low.
    let per_task = groups.div_ceil(rayon::current_num_threads() * 8).max(1);
    let out = OutColumns::new(out, rows);
    (0..groups.div_ceil(per_task))
        .into_par_iter()
        .for_each(|task| {
            let mut tile_out = [0f32; MAX_TILE * MAX_GROUP_ROWS];
            for group in task * per_task..((task + 1) * per_task).min(groups) {
                let cols = group * group_rows..((group + 1) * group_rows).min(rows);
                for row0 in (0..m).step_by(tile) {
                    let results = &mut tile_out[..(m - row0).min(tile) * group_rows];
                    dot(group, row0, results);
                    for (r, lanes) in results.chunks_exact(group_rows).enumerate() {
                        // SAFETY: this task alone writes columns `cols`.
                        unsafe { out.write(row0 + r, cols.clone(), &lanes[..cols.len()]) };
                    }
                }
            }
        });
}

/// The largest `TILE` of any kernel.
const MAX_TILE: usize = 8;
/// The largest `ROWS` of any kernel.
const MAX_GROUP_ROWS: usize = 8;

/// A row-major output matrix whose column ranges parallel tasks fill, each
/// task its own columns of every row (a split `chunks_mut` cannot express).
struct OutColumns<'a> {
    ptr: *mut f32,
    len: usize,
    cols: usize,
    _borrow: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: tasks write disjoint elements (`write`'s contract), and the
// borrow keeps the matrix alive for as long as they run.
unsafe impl Send for OutColumns<'_> {}
unsafe impl Sync for OutColumns<'_> {}

impl<'a> OutColumns<'a> {
    fn new(out: &'a mut [f32], cols: usize) -> Self {
        Self {
            ptr: out.as_mut_ptr(),
            len: out.len(),
            cols,
            _borrow: std::marker::PhantomData,
        }
    }

    /// Writes `values` to row `row`, columns `cols`.
    ///
    /// # Safety
    /// No other thread may access these elements during the call.
    unsafe fn write(&self, row: usize, cols: std::ops::Range<usize>, values: &[f32]) {
        let start = row * self.cols + cols.start;
        assert!(cols.end <= self.cols && start + values.len() <= self.len);
        assert_eq!(values.len(), cols.len());
        let dst = self.ptr.add(start);
        // A whole group's run as one fixed-size move: a `memcpy` call per
        // eight floats cost a few percent of a batched step.
        match values.len() {
            8 => dst
                .cast::<[f32; 8]>()
                .write_unaligned(*values.as_ptr().cast::<[f32; 8]>()),
            4 => dst
                .cast::<[f32; 4]>()
                .write_unaligned(*values.as_ptr().cast::<[f32; 4]>()),
            n => std::ptr::copy_nonoverlapping(values.as_ptr(), dst, n),
        }
    }
}

/// Checks GGUF bytes against a shape of `rows` by `cols` in blocks of
/// `block_values` values and `block_bytes` bytes; returns blocks per row.
fn check_shape(
    data: &[u8],
    (rows, cols): (usize, usize),
    (block_values, block_bytes): (usize, usize),
    dtype: &str,
) -> Result<usize, String> {
    if !cols.is_multiple_of(block_values) {
        return Err(format!(
            "{dtype} needs a multiple of {block_values} columns, got {cols}"
        ));
    }
    let blocks = cols / block_values;
    let expected = blocks
        .checked_mul(block_bytes)
        .and_then(|row_bytes| rows.checked_mul(row_bytes));
    if Some(data.len()) != expected {
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
