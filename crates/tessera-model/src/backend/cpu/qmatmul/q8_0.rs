//! Q8_0 weights (the default model's embedding and tied LM head: the largest
//! matrix, applied to every sampled row).
//!
//! The result of one weight row and one activation row is, block by block in
//! order, `acc = (dw * dy).mul_add(sumi, acc)` with `sumi` the exact integer
//! dot of the block: one f32 accumulator, one rounding order, on every CPU.
//! The SIMD kernels (`q8_0_x86`) put eight weight rows in the eight lanes of a
//! vector, so that order is each lane's own and one conversion, multiply and
//! FMA serve eight rows; only the integer dot, exact in any order, is
//! rearranged (AVX2's sign trick, or AVX-512 VNNI's `vpdpbusd`).

use half::f16;

use super::activations::Q8Rows;
use super::{check_shape, GroupKernel, QK};

/// Bytes of one GGUF Q8_0 block: f16 scale, 32 signed bytes.
const BLOCK_BYTES: usize = 34;
/// Weight rows per group: one per f32 lane of a 256-bit vector.
pub(super) const ROWS: usize = 8;
/// Values of one row per 32-bit lane of the interleaved layout.
const RUN: usize = 4;

/// A Q8_0 matrix, `rows` outputs by `cols` inputs, repacked by groups of eight
/// rows. Index `group * blocks + block` addresses one group's block; in its
/// `qs`, byte `32 * k + 4 * lane + i` is value `4 * k + i` of the lane's row,
/// so each 32-byte run holds four consecutive values of all eight rows.
/// Lanes past `rows` (padding of the last group) are zero.
pub struct Q8_0Matrix {
    rows: usize,
    blocks: usize,
    pub(super) qs: Vec<[i8; QK * ROWS]>,
    pub(super) d: Vec<[f32; ROWS]>,
}

impl Q8_0Matrix {
    /// Repacks GGUF Q8_0 bytes (row-major runs of 34-byte blocks).
    pub fn from_gguf_bytes(data: &[u8], rows: usize, cols: usize) -> Result<Self, String> {
        let blocks = check_shape(data, (rows, cols), (QK, BLOCK_BYTES), "Q8_0")?;
        let padded = rows.div_ceil(ROWS) * blocks;
        let mut w = Self {
            rows,
            blocks,
            qs: vec![[0i8; QK * ROWS]; padded],
            d: vec![[0f32; ROWS]; padded],
        };
        for (row, row_bytes) in data.chunks_exact(blocks * BLOCK_BYTES).enumerate() {
            let (group, lane) = (row / ROWS, row % ROWS);
            for (b, block) in row_bytes.chunks_exact(BLOCK_BYTES).enumerate() {
                let at = group * blocks + b;
                w.d[at][lane] = f16::from_le_bytes([block[0], block[1]]).to_f32();
                for (t, &byte) in block[2..].iter().enumerate() {
                    w.qs[at][index(lane, t)] = i8::from_le_bytes([byte]);
                }
            }
        }
        Ok(w)
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// `out = x @ W^T` for `x` of `m` rows; `out` is `m` by `rows`, row-major.
    pub fn matmul_t(&self, x: &[f32], m: usize, out: &mut [f32]) {
        super::matmul_t(self, x, m, out);
    }

    /// Dequantizes row `row` into `out` (`cols` values), as candle's `to_float`.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let (group, lane) = (row / ROWS, row % ROWS);
        for (b, values) in out.chunks_exact_mut(QK).enumerate() {
            let at = group * self.blocks + b;
            let d = self.d[at][lane];
            for (t, v) in values.iter_mut().enumerate() {
                *v = f32::from(self.qs[at][index(lane, t)]) * d;
            }
        }
    }
}

/// Where value `t` of lane `lane` sits in a block of the interleaved layout.
fn index(lane: usize, t: usize) -> usize {
    (t / RUN) * (RUN * ROWS) + RUN * lane + t % RUN
}

impl GroupKernel for Q8_0Matrix {
    const ROWS: usize = ROWS;

    fn rows(&self) -> usize {
        self.rows
    }

    fn blocks(&self) -> usize {
        self.blocks
    }

    fn dot_group(&self, group: usize, y: &Q8Rows, row0: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if super::q8_0_x86::dot_group(self, group, y, row0, out) {
            return;
        }
        dot_group_scalar(self, group, y, row0, out);
    }
}

/// The reference every kernel equals bit for bit.
pub(super) fn dot_group_scalar(
    w: &Q8_0Matrix,
    group: usize,
    y: &Q8Rows,
    row0: usize,
    out: &mut [f32],
) {
    for (r, lanes) in out.chunks_exact_mut(ROWS).enumerate() {
        let y0 = (row0 + r) * y.blocks;
        for (lane, result) in lanes.iter_mut().enumerate() {
            let mut acc = 0f32;
            for b in 0..w.blocks {
                let at = group * w.blocks + b;
                let sumi: i32 = (0..QK)
                    .map(|t| i32::from(w.qs[at][index(lane, t)]) * i32::from(y.qs[y0 + b][t]))
                    .sum();
                acc = (w.d[at][lane] * y.d[y0 + b][0]).mul_add(sumi as f32, acc);
            }
            *result = acc;
        }
    }
}
