//! Q4_0 weights: `value = (q - 8) * d` for 4-bit `q`, a scale per 32 values.
//!
//! Against Q8_0 activations (the same as candle's), per block and row:
//! the integer dot `sum((q - 8) * a) = sum(q * a) - 8 * sum(a)` is exact, the
//! unsigned part by `maddubs` on the nibbles as they are and `sum(a)` from
//! the activation quantizer, then `sumi * dx * dy` is added to an f32 sum in
//! block order. The AVX2 kernel (`q4_0_avx2`) does exactly these operations,
//! four weight rows in SIMD lanes, so it returns the scalar reference's bits.
//! (Not candle's: its kernel sums blocks into eight lanes with FMA.)

use half::f16;

use super::activations::Q8Rows;
use super::nibbles::{self, CHUNK_BYTES};
use super::{check_shape, GroupKernel, GROUP, QK};

/// Bytes of one GGUF Q4_0 block: f16 scale, 16 bytes of nibbles.
const BLOCK_BYTES: usize = 18;

/// A Q4_0 matrix, `rows` outputs by `cols` inputs, repacked by groups of four
/// rows: index `group * blocks + block` of `nibbles` (the layout of
/// `nibbles.rs`) and `d`. Lanes past `rows` (padding of the last group) are zero.
pub struct Q4_0Matrix {
    rows: usize,
    blocks: usize,
    pub(super) nibbles: Vec<[u8; CHUNK_BYTES]>,
    pub(super) d: Vec<[f32; GROUP]>,
}

impl Q4_0Matrix {
    /// Repacks GGUF Q4_0 bytes (row-major runs of 18-byte blocks).
    pub fn from_gguf_bytes(data: &[u8], rows: usize, cols: usize) -> Result<Self, String> {
        let blocks = check_shape(data, (rows, cols), (QK, BLOCK_BYTES), "Q4_0")?;
        let padded = rows.div_ceil(GROUP) * blocks;
        let mut w = Self {
            rows,
            blocks,
            nibbles: vec![[0u8; CHUNK_BYTES]; padded],
            d: vec![[0f32; GROUP]; padded],
        };
        for (row, row_bytes) in data.chunks_exact(blocks * BLOCK_BYTES).enumerate() {
            let (group, lane) = (row / GROUP, row % GROUP);
            for (b, block) in row_bytes.chunks_exact(BLOCK_BYTES).enumerate() {
                let at = group * blocks + b;
                w.d[at][lane] = f16::from_le_bytes([block[0], block[1]]).to_f32();
                // GGUF: byte t holds value t (low nibble) and value t + 16 (high).
                let qs = &block[2..];
                for t in 0..QK {
                    let q = qs[t % 16] >> (4 * (t / 16));
                    nibbles::set(&mut w.nibbles[at], lane, t, q);
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
        let (group, lane) = (row / GROUP, row % GROUP);
        for (b, values) in out.chunks_exact_mut(QK).enumerate() {
            let at = group * self.blocks + b;
            let d = self.d[at][lane];
            for (t, v) in values.iter_mut().enumerate() {
                let q = i16::from(nibbles::get(&self.nibbles[at], lane, t)) - 8;
                *v = f32::from(q) * d;
            }
        }
    }
}

impl GroupKernel for Q4_0Matrix {
    const ROWS: usize = GROUP;

    fn rows(&self) -> usize {
        self.rows
    }

    fn blocks(&self) -> usize {
        self.blocks
    }

    fn dot_group(&self, group: usize, y: &Q8Rows, row0: usize, out: &mut [f32]) {
        let (out, _) = out.as_chunks_mut::<GROUP>();
        #[cfg(target_arch = "x86_64")]
        {
            use super::q4_0_avx2::dot_group;
            let table = [
                dot_group::<1>,
                dot_group::<2>,
                dot_group::<3>,
                dot_group::<4>,
            ];
            // SAFETY: the kernels check their indices.
            if unsafe { super::x86::avx2_tiles(&table, self, (group, y, row0), out) } {
                return;
            }
        }
        dot_group_scalar(self, group, y, row0, out);
    }
}

/// The reference, per activation row and lane: the exact integer dot of each
/// block, then `sumf += sumi * dx * dy` in block order.
pub(super) fn dot_group_scalar(
    w: &Q4_0Matrix,
    group: usize,
    y: &Q8Rows,
    row0: usize,
    out: &mut [[f32; GROUP]],
) {
    for (r, lanes) in out.iter_mut().enumerate() {
        let y0 = (row0 + r) * y.blocks;
        for (lane, sumf) in lanes.iter_mut().enumerate() {
            *sumf = 0.0;
            for b in 0..w.blocks {
                let at = group * w.blocks + b;
                let sumi: i32 = (0..QK)
                    .map(|t| {
                        let q = i32::from(nibbles::get(&w.nibbles[at], lane, t)) - 8;
                        q * i32::from(y.qs[y0 + b][t])
                    })
                    .sum();
                *sumf += sumi as f32 * w.d[at][lane] * y.d[y0 + b][0];
            }
        }
    }
}
