//! Q4_K weights: super-blocks of 256 values in 8 sub-blocks of 32, each with a
//! 6-bit scale `sc` and min `m`; `value = d * sc * q - dmin * m` for 4-bit `q`
//! (ggml's `dequantize_row_q4_K`).
//!
//! Against Q8_K activations `a` (scale `dy`), per super-block and row, two exact
//! integers: `sumi = sum over sub-blocks of sc * sum(q * a)` and
//! `summ = sum of m * sum(a)`; then `sumf += sumi * (d * dy) - summ * (dmin * dy)`
//! in super-block order. The AVX2 kernel (`q4_k_avx2`) does exactly these
//! operations, four weight rows in SIMD lanes: the scalar reference's bits.
//! The 6-bit scales and mins are unpacked at load, so the kernel only widens
//! them.

use half::f16;

use super::nibbles::{self, CHUNK_BYTES};
use super::q8_k::{Q8KRows, QK_K};
use super::superblocks::{self, SuperBlockKernel};
use super::{check_shape, GROUP, QK};

/// Bytes of one GGUF Q4_K block: f16 d, f16 dmin, 12 bytes of packed 6-bit
/// scales and mins, 128 bytes of nibbles.
const BLOCK_BYTES: usize = 144;
/// Sub-blocks per super-block.
const SUBS: usize = QK_K / QK;

/// One super-block of a group's four rows.
#[derive(Clone)]
pub(super) struct Q4KBlock {
    /// Sub-block `s`'s values, in the layout of `nibbles.rs`.
    pub qs: [[u8; CHUNK_BYTES]; SUBS],
    /// `scales[s][lane]`: sub-block `s`'s scale, 0..64.
    pub scales: [[u8; GROUP]; SUBS],
    /// `mins[h][lane][k]`: the min of sub-block `4h + k`, 0..64 (each lane's
    /// four side by side, as the kernel multiplies them with activation sums).
    pub mins: [[[u8; 4]; GROUP]; 2],
    /// Per lane: the scales' scale.
    pub d: [f32; GROUP],
    /// Per lane: the mins' scale.
    pub dmin: [f32; GROUP],
}

const ZERO: Q4KBlock = Q4KBlock {
    qs: [[0; CHUNK_BYTES]; SUBS],
    scales: [[0; GROUP]; SUBS],
    mins: [[[0; 4]; GROUP]; 2],
    d: [0.0; GROUP],
    dmin: [0.0; GROUP],
};

/// A Q4_K matrix, `rows` outputs by `cols` inputs, repacked by groups of four
/// rows: `blocks[group * super_blocks + sb]`. Lanes past `rows` are zero.
pub struct Q4KMatrix {
    rows: usize,
    super_blocks: usize,
    pub(super) blocks: Vec<Q4KBlock>,
}

/// ggml's `get_scale_min_k4`: sub-block `j`'s 6-bit scale and min.
fn scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

impl Q4KMatrix {
    /// Repacks GGUF Q4_K bytes (row-major runs of 144-byte blocks).
    pub fn from_gguf_bytes(data: &[u8], rows: usize, cols: usize) -> Result<Self, String> {
        let super_blocks = check_shape(data, (rows, cols), (QK_K, BLOCK_BYTES), "Q4_K")?;
        let mut w = Self {
            rows,
            super_blocks,
            blocks: vec![ZERO; rows.div_ceil(GROUP) * super_blocks],
        };
        for (row, row_bytes) in data.chunks_exact(super_blocks * BLOCK_BYTES).enumerate() {
            let (group, lane) = (row / GROUP, row % GROUP);
            for (sb, block) in row_bytes.chunks_exact(BLOCK_BYTES).enumerate() {
                let out = &mut w.blocks[group * super_blocks + sb];
                out.d[lane] = f16::from_le_bytes([block[0], block[1]]).to_f32();
                out.dmin[lane] = f16::from_le_bytes([block[2], block[3]]).to_f32();
                let (scales, qs) = (&block[4..16], &block[16..]);
                for s in 0..SUBS {
                    let (sc, m) = scale_min(s, scales);
                    out.scales[s][lane] = sc;
                    out.mins[s / 4][lane][s % 4] = m;
                }
                // GGUF: byte 32i + l holds value 64i + l (low nibble) and
                // value 64i + 32 + l (high).
                for v in 0..QK_K {
                    let (i, half, l) = (v / 64, (v / 32) % 2, v % 32);
                    let q = qs[32 * i + l] >> (4 * half);
                    nibbles::set(&mut out.qs[v / QK], lane, v % QK, q);
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
        superblocks::matmul_t(self, x, m, out);
    }

    /// Dequantizes row `row` into `out` (`cols` values), as candle's `to_float`.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let (group, lane) = (row / GROUP, row % GROUP);
        for (sb, values) in out.chunks_exact_mut(QK_K).enumerate() {
            let b = &self.blocks[group * self.super_blocks + sb];
            for (s, sub) in values.chunks_exact_mut(QK).enumerate() {
                let d = b.d[lane] * f32::from(b.scales[s][lane]);
                let m = b.dmin[lane] * f32::from(b.mins[s / 4][lane][s % 4]);
                for (t, v) in sub.iter_mut().enumerate() {
                    *v = d * f32::from(nibbles::get(&b.qs[s], lane, t)) - m;
                }
            }
        }
    }
}

impl SuperBlockKernel for Q4KMatrix {
    fn rows(&self) -> usize {
        self.rows
    }

    fn super_blocks(&self) -> usize {
        self.super_blocks
    }

    fn dot_group(&self, group: usize, y: &Q8KRows, row0: usize, out: &mut [[f32; GROUP]]) {
        #[cfg(target_arch = "x86_64")]
        {
            use super::q4_k_avx2::dot_group;
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

/// The reference, per activation row and lane: the two exact integers of each
/// super-block from the definitions, then the float step in super-block order.
pub(super) fn dot_group_scalar(
    w: &Q4KMatrix,
    group: usize,
    y: &Q8KRows,
    row0: usize,
    out: &mut [[f32; GROUP]],
) {
    for (r, lanes) in out.iter_mut().enumerate() {
        for (lane, sumf) in lanes.iter_mut().enumerate() {
            *sumf = 0.0;
            for sb in 0..w.super_blocks {
                let b = &w.blocks[group * w.super_blocks + sb];
                let a = &y.blocks[(row0 + r) * w.super_blocks + sb];
                let (mut sumi, mut summ) = (0i32, 0i32);
                for s in 0..SUBS {
                    let (mut dot, mut sum) = (0i32, 0i32);
                    for t in 0..QK {
                        let q = i32::from(nibbles::get(&b.qs[s], lane, t));
                        dot += q * i32::from(a.qs[s][t]);
                        sum += i32::from(a.qs[s][t]);
                    }
                    sumi += i32::from(b.scales[s][lane]) * dot;
                    summ += i32::from(b.mins[s / 4][lane][s % 4]) * sum;
                }
                *sumf += sumi as f32 * (b.d[lane] * a.d) - summ as f32 * (b.dmin[lane] * a.d);
            }
        }
    }
}
