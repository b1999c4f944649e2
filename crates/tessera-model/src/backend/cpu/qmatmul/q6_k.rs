//! Q6_K weights: super-blocks of 256 values in 16 sub-blocks of 16, each with
//! an 8-bit signed scale `sc`; `value = d * sc * (q - 32)` for 6-bit `q`
//! (ggml's `dequantize_row_q6_K`).
//!
//! Against Q8_K activations `a` (scale `dy`), per super-block and row, one
//! exact integer `sumi = sum over sub-blocks of sc * sum((q - 32) * a)`, then
//! `sumf += sumi * (d * dy)` in super-block order. The AVX2 kernel
//! (`q6_k_avx2`) computes `sumi` as `sum(sc * sum(q * a)) - 32 * sum(sc * bsum)`
//! (unsigned `q` suits `maddubs`) and otherwise the same operations, four
//! weight rows in SIMD lanes: the scalar reference's bits. The repacked
//! weights keep 6 bits per value (4 + 2 in separate planes), as decode reads
//! every weight once per token.

use half::f16;

use super::nibbles::{self, CHUNK_BYTES};
use super::q8_k::{Q8KRows, QK_K};
use super::superblocks::{self, SuperBlockKernel};
use super::{check_shape, GROUP, QK};

/// Bytes of one GGUF Q6_K block: 128 bytes of low nibbles, 64 of high bit
/// pairs, 16 i8 scales, f16 d.
const BLOCK_BYTES: usize = 210;
/// 32-value chunks per super-block (two sub-blocks each).
const CHUNKS: usize = QK_K / QK;
/// Sub-blocks per super-block.
const SUBS: usize = QK_K / 16;

/// One super-block of a group's four rows.
#[derive(Clone)]
pub(super) struct Q6KBlock {
    /// Chunk `c`'s low four bits, in the layout of `nibbles.rs`.
    pub ql: [[u8; CHUNK_BYTES]; CHUNKS],
    /// Chunk `c`'s high two bits: byte `8 * lane + i`, bits `2j..2j + 2` hold
    /// those of value `8j + i` (the vector the nibbles unpack to).
    pub qh: [[u8; 32]; CHUNKS],
    /// `scales[s][lane]`: sub-block `s`'s scale.
    pub scales: [[i8; GROUP]; SUBS],
    /// Per lane: the scales' scale.
    pub d: [f32; GROUP],
}

const ZERO: Q6KBlock = Q6KBlock {
    ql: [[0; CHUNK_BYTES]; CHUNKS],
    qh: [[0; 32]; CHUNKS],
    scales: [[0; GROUP]; SUBS],
    d: [0.0; GROUP],
};

impl Q6KBlock {
    /// Value `t` (0..32) of chunk `c`, lane `lane`: 0..64.
    pub fn q(&self, c: usize, lane: usize, t: usize) -> u8 {
        let (j, i) = (t / 8, t % 8);
        let high = (self.qh[c][8 * lane + i] >> (2 * j)) & 3;
        nibbles::get(&self.ql[c], lane, t) | (high << 4)
    }
}

/// A Q6_K matrix, `rows` outputs by `cols` inputs, repacked by groups of four
/// rows: `blocks[group * super_blocks + sb]`. Lanes past `rows` are zero.
pub struct Q6KMatrix {
    rows: usize,
    super_blocks: usize,
    pub(super) blocks: Vec<Q6KBlock>,
}

impl Q6KMatrix {
    /// Repacks GGUF Q6_K bytes (row-major runs of 210-byte blocks).
    pub fn from_gguf_bytes(data: &[u8], rows: usize, cols: usize) -> Result<Self, String> {
        let super_blocks = check_shape(data, (rows, cols), (QK_K, BLOCK_BYTES), "Q6_K")?;
        let mut w = Self {
            rows,
            super_blocks,
            blocks: vec![ZERO; rows.div_ceil(GROUP) * super_blocks],
        };
        for (row, row_bytes) in data.chunks_exact(super_blocks * BLOCK_BYTES).enumerate() {
            let (group, lane) = (row / GROUP, row % GROUP);
            for (sb, block) in row_bytes.chunks_exact(BLOCK_BYTES).enumerate() {
                let out = &mut w.blocks[group * super_blocks + sb];
                let (ql, qh, scales) = (&block[..128], &block[128..192], &block[192..208]);
                out.d[lane] = f16::from_le_bytes([block[208], block[209]]).to_f32();
                for (s, &sc) in scales.iter().enumerate() {
                    out.scales[s][lane] = i8::from_le_bytes([sc]);
                }
                // GGUF: value 128n + 32k + l has its low bits in byte
                // 64n + 32(k % 2) + l of `ql` (low nibble for k < 2, else
                // high), its high bits at bit 2k of byte 32n + l of `qh`.
                for v in 0..QK_K {
                    let (n, k, l) = (v / 128, (v % 128) / 32, v % 32);
                    let low = ql[64 * n + 32 * (k % 2) + l] >> (4 * (k / 2));
                    let high = (qh[32 * n + l] >> (2 * k)) & 3;
                    let (c, t) = (v / QK, v % QK);
                    nibbles::set(&mut out.ql[c], lane, t, low);
                    out.qh[c][8 * lane + t % 8] |= high << (2 * (t / 8));
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
            for (v, out) in values.iter_mut().enumerate() {
                let d = b.d[lane] * f32::from(b.scales[v / 16][lane]);
                let q = i16::from(b.q(v / QK, lane, v % QK)) - 32;
                *out = d * f32::from(q);
            }
        }
    }
}

impl SuperBlockKernel for Q6KMatrix {
    fn rows(&self) -> usize {
        self.rows
    }

    fn super_blocks(&self) -> usize {
        self.super_blocks
    }

    fn dot_group(&self, group: usize, y: &Q8KRows, row0: usize, out: &mut [[f32; GROUP]]) {
        #[cfg(target_arch = "x86_64")]
        {
            use super::q6_k_avx2::dot_group;
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

/// The reference, per activation row and lane: each super-block's exact
/// integer from the definition, then the float step in super-block order.
pub(super) fn dot_group_scalar(
    w: &Q6KMatrix,
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
                let mut sumi = 0i32;
                for s in 0..SUBS {
                    let dot: i32 = (16 * s..16 * s + 16)
                        .map(|v| {
                            let q = i32::from(b.q(v / QK, lane, v % QK)) - 32;
                            q * i32::from(a.q(v))
                        })
                        .sum();
                    sumi += i32::from(b.scales[s][lane]) * dot;
                }
                *sumf += sumi as f32 * (b.d[lane] * a.d);
            }
        }
    }
}
