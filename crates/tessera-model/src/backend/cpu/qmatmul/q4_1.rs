//! Q4_1 weights: the default model's layers.
//!
//! The value of a weight is `q * d + m` (`q` in 0..16). With Q8_1
//! activations (`y = qy * dy`, `sy` their f16-rounded sum), the dot of one
//! weight row and one activation row is, block by block in order,
//! `acc = (dw * dy).mul_add(sumi, acc)` then `acc = mw.mul_add(sy, acc)`,
//! `sumi` being the exact integer dot of the block: the arithmetic of
//! candle's Q4_1 x Q8_1 dot in an order made for SIMD, one f32 accumulator
//! and one rounding order on every CPU.
//!
//! The layout puts eight weight rows in the eight 32-bit lanes of a vector
//! (`x86.rs`): one block of a group is 128 bytes, four 32-byte vectors whose
//! low and high nibbles give the eight runs of four values. The SIMD kernels
//! (`q4_1_x86`) compute the integer dots with `maddubs` (AVX2) or `vpdpbusd`
//! (AVX-512 VNNI) and equal the scalar reference below bit for bit.

use half::f16;

use super::activations::Q8Rows;
use super::{check_shape, GroupKernel, QK};

/// Bytes of one GGUF Q4_1 block: f16 scale, f16 min, 16 bytes of nibbles.
const BLOCK_BYTES: usize = 20;
/// Weight rows per group: one per f32 lane of a 256-bit vector.
pub(super) const ROWS: usize = 8;
/// Values of one row per 32-bit lane.
const RUN: usize = 4;
/// Activation rows per kernel call: each unpacked block serves eight rows
/// (AVX-512 VL's 32 vector registers hold their accumulators; the AVX2
/// kernel, with 16, takes them four at a time).
pub(super) const TILE: usize = 8;

/// A Q4_1 matrix, `rows` outputs by `cols` inputs, repacked by groups of eight
/// rows. Index `group * blocks + block` addresses one group's block. In its
/// `nibbles`, byte `32 * v + 4 * lane + i` holds value `4 * (2v) + i` of the
/// lane's row in its low nibble and value `4 * (2v + 1) + i` in its high
/// nibble. Lanes past `rows` (padding of the last group) are zero.
pub struct Q4_1Matrix {
    rows: usize,
    blocks: usize,
    pub(super) nibbles: Vec<[u8; QK * ROWS / 2]>,
    pub(super) d: Vec<[f32; ROWS]>,
    pub(super) m: Vec<[f32; ROWS]>,
}

impl Q4_1Matrix {
    /// Repacks GGUF Q4_1 bytes (row-major runs of 20-byte blocks).
    pub fn from_gguf_bytes(data: &[u8], rows: usize, cols: usize) -> Result<Self, String> {
        let blocks = check_shape(data, (rows, cols), (QK, BLOCK_BYTES), "Q4_1")?;
        let padded = rows.div_ceil(ROWS) * blocks;
        let mut w = Self {
            rows,
            blocks,
            nibbles: vec![[0u8; QK * ROWS / 2]; padded],
            d: vec![[0f32; ROWS]; padded],
            m: vec![[0f32; ROWS]; padded],
        };
        for (row, row_bytes) in data.chunks_exact(blocks * BLOCK_BYTES).enumerate() {
            let (group, lane) = (row / ROWS, row % ROWS);
            for (b, block) in row_bytes.chunks_exact(BLOCK_BYTES).enumerate() {
                let at = group * blocks + b;
                w.d[at][lane] = f16::from_le_bytes([block[0], block[1]]).to_f32();
                w.m[at][lane] = f16::from_le_bytes([block[2], block[3]]).to_f32();
                // GGUF: byte t holds value t (low nibble) and value t + 16 (high).
                let qs = &block[4..];
                for t in 0..QK {
                    let value = (qs[t % 16] >> (4 * (t / 16))) & 0x0F;
                    let (at_byte, shift) = position(lane, t);
                    w.nibbles[at][at_byte] |= value << shift;
                }
            }
        }
        Ok(w)
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Value `t` of block `at`'s lane `lane`, 0..16.
    pub(super) fn value(&self, at: usize, lane: usize, t: usize) -> u8 {
        let (byte, shift) = position(lane, t);
        (self.nibbles[at][byte] >> shift) & 0x0F
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
            let (d, m) = (self.d[at][lane], self.m[at][lane]);
            for (t, v) in values.iter_mut().enumerate() {
                *v = f32::from(self.value(at, lane, t)) * d + m;
            }
        }
    }
}

/// Byte and bit shift of value `t` of lane `lane` within a block.
fn position(lane: usize, t: usize) -> (usize, u32) {
    let (run, i) = (t / RUN, t % RUN);
    (
        (run / 2) * (RUN * ROWS) + RUN * lane + i,
        4 * (run % 2) as u32,
    )
}

impl GroupKernel for Q4_1Matrix {
    const ROWS: usize = ROWS;
    const TILE: usize = TILE;

    fn rows(&self) -> usize {
        self.rows
    }

    fn blocks(&self) -> usize {
        self.blocks
    }

    fn dot_group(&self, group: usize, y: &Q8Rows, row0: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if super::q4_1_x86::dot_group(self, group, y, row0, out) {
            return;
        }
        dot_group_scalar(self, group, y, row0, out);
    }
}

/// The reference every kernel equals bit for bit.
pub(super) fn dot_group_scalar(
    w: &Q4_1Matrix,
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
                let yq = &y.qs[y0 + b];
                let sumi: i32 = (0..QK)
                    .map(|t| i32::from(w.value(at, lane, t)) * i32::from(yq[t]))
                    .sum();
                acc = (w.d[at][lane] * y.d[y0 + b][0]).mul_add(sumi as f32, acc);
                acc = w.m[at][lane].mul_add(y.s[y0 + b], acc);
            }
            *result = acc;
        }
    }
}
