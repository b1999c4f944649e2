//! Q4_1 weights (candle's Q4_1 dot product is scalar, and dominated the CPU
//! forward before this).
//!
//! candle computes, per block, an exact integer dot of the weight nibbles with
//! the Q8_1 activations, then adds `sumi * dx * dy + mx * sy` to a running
//! f32 sum in block order. The AVX2 kernel (`q4_1_avx2`) vectorizes the
//! integer part, exact in any order, and runs four weight rows' float terms
//! side by side in SIMD lanes, each lane doing the scalar operations in the
//! scalar order: the same bits as candle's, on any CPU. The repacked layout
//! lets one 32-byte load unpack to eight values of each of four rows.

use half::f16;

use super::activations::Q8Rows;
use super::{check_shape, GroupKernel, GROUP, QK, ROW_TILE};

/// Bytes of one GGUF Q4_1 block: f16 scale, f16 min, 16 bytes of nibbles.
const BLOCK_BYTES: usize = 20;

/// A Q4_1 matrix, `rows` outputs by `cols` inputs, repacked by groups of four
/// rows. Index `group * blocks + block` addresses one group's block:
/// byte `(j / 2) * 32 + 8 * lane + i` of `nibbles` holds value `8 * j + i` of
/// the lane's row in its low nibble (`j` even) or high nibble (`j` odd).
/// Lanes past `rows` (padding of the last group) are zero.
pub struct Q4_1Matrix {
    rows: usize,
    blocks: usize,
    pub(super) nibbles: Vec<[u8; 2 * QK]>,
    pub(super) d: Vec<[f32; GROUP]>,
    pub(super) m: Vec<[f32; GROUP]>,
}

impl Q4_1Matrix {
    /// Repacks GGUF Q4_1 bytes (row-major runs of 20-byte blocks).
    pub fn from_gguf_bytes(data: &[u8], rows: usize, cols: usize) -> Result<Self, String> {
        let blocks = check_shape(data, rows, cols, BLOCK_BYTES, "Q4_1")?;
        let padded = rows.div_ceil(GROUP) * blocks;
        let mut w = Self {
            rows,
            blocks,
            nibbles: vec![[0u8; 2 * QK]; padded],
            d: vec![[0f32; GROUP]; padded],
            m: vec![[0f32; GROUP]; padded],
        };
        for (row, row_bytes) in data.chunks_exact(blocks * BLOCK_BYTES).enumerate() {
            let (group, lane) = (row / GROUP, row % GROUP);
            for (b, block) in row_bytes.chunks_exact(BLOCK_BYTES).enumerate() {
                let at = group * blocks + b;
                w.d[at][lane] = f16::from_le_bytes([block[0], block[1]]).to_f32();
                w.m[at][lane] = f16::from_le_bytes([block[2], block[3]]).to_f32();
                // GGUF: byte t holds value t (low nibble) and value t + 16 (high).
                let qs = &block[4..];
                let value = |t: usize| (qs[t % 16] >> (4 * (t / 16))) & 0x0F;
                for t in 0..QK {
                    let (j, i) = (t / 8, t % 8);
                    w.nibbles[at][(j / 2) * 32 + 8 * lane + i] |= value(t) << (4 * (j % 2));
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
    fn value(&self, at: usize, lane: usize, t: usize) -> u8 {
        let (j, i) = (t / 8, t % 8);
        (self.nibbles[at][(j / 2) * 32 + 8 * lane + i] >> (4 * (j % 2))) & 0x0F
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
            let (d, m) = (self.d[at][lane], self.m[at][lane]);
            for (t, v) in values.iter_mut().enumerate() {
                *v = f32::from(self.value(at, lane, t)) * d + m;
            }
        }
    }
}

impl GroupKernel for Q4_1Matrix {
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
        if std::arch::is_x86_feature_detected!("avx2") {
            use super::q4_1_avx2::dot_group;
            // SAFETY: AVX2 is present; the kernel checks its indices.
            unsafe {
                match out.len() {
                    1 => dot_group::<1>(self, group, y, row0, out),
                    2 => dot_group::<2>(self, group, y, row0, out),
                    3 => dot_group::<3>(self, group, y, row0, out),
                    _ => dot_group::<ROW_TILE>(self, group, y, row0, out),
                }
            }
            return;
        }
        dot_group_scalar(self, group, y, row0, out);
    }
}

/// The reference: candle's `vec_dot_unopt` for Q4_1 x Q8_1, per row and lane.
pub(super) fn dot_group_scalar(
    w: &Q4_1Matrix,
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
                let yq = &y.qs[y0 + b];
                let sumi: i32 = (0..QK)
                    .map(|t| i32::from(w.value(at, lane, t)) * i32::from(yq[t]))
                    .sum();
                *sumf +=
                    sumi as f32 * w.d[at][lane] * y.d[y0 + b][0] + w.m[at][lane] * y.s[y0 + b][0];
            }
        }
    }
}
