//! Q8_0 weights (the default model's embedding and tied LM head: the largest
//! matrix, applied to every sampled row).
//!
//! candle's AVX2 dot product keeps eight f32 partial sums, adds
//! `(dx * dy) * (eight 4-product integer sums)` to them with FMA block by block,
//! and sums the eight lanes in a fixed tree at the end. Both paths here do
//! exactly that (the scalar one with `mul_add`), so results are candle's bits
//! on AVX2 machines and the same bits everywhere. What changes is the memory
//! traffic: candle re-reads this 30 MB matrix for every few activation rows,
//! here each group of rows is read once per call.

use half::f16;

use super::activations::Q8Rows;
use super::{check_shape, GroupKernel, GROUP, QK};

/// Bytes of one GGUF Q8_0 block: f16 scale, 32 signed bytes.
const BLOCK_BYTES: usize = 34;

/// A Q8_0 matrix, `rows` outputs by `cols` inputs, repacked by groups of four
/// rows: index `(group * blocks + block) * GROUP + lane` of `qs`, and
/// `group * blocks + block` of `d`. Lanes past `rows` are zero.
pub struct Q8_0Matrix {
    rows: usize,
    blocks: usize,
    qs: Vec<[i8; QK]>,
    d: Vec<[f32; GROUP]>,
}

impl Q8_0Matrix {
    /// Repacks GGUF Q8_0 bytes (row-major runs of 34-byte blocks).
    pub fn from_gguf_bytes(data: &[u8], rows: usize, cols: usize) -> Result<Self, String> {
        let blocks = check_shape(data, rows, cols, BLOCK_BYTES, "Q8_0")?;
        let padded = rows.div_ceil(GROUP) * blocks;
        let mut w = Self {
            rows,
            blocks,
            qs: vec![[0i8; QK]; padded * GROUP],
            d: vec![[0f32; GROUP]; padded],
        };
        for (row, row_bytes) in data.chunks_exact(blocks * BLOCK_BYTES).enumerate() {
            let (group, lane) = (row / GROUP, row % GROUP);
            for (b, block) in row_bytes.chunks_exact(BLOCK_BYTES).enumerate() {
                let at = group * blocks + b;
                w.d[at][lane] = f16::from_le_bytes([block[0], block[1]]).to_f32();
                for (q, &byte) in w.qs[at * GROUP + lane].iter_mut().zip(&block[2..]) {
                    *q = i8::from_le_bytes([byte]);
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
            for (v, &q) in values.iter_mut().zip(&self.qs[at * GROUP + lane]) {
                *v = f32::from(q) * d;
            }
        }
    }
}

impl GroupKernel for Q8_0Matrix {
    fn rows(&self) -> usize {
        self.rows
    }

    fn blocks(&self) -> usize {
        self.blocks
    }

    fn dot_group(&self, group: usize, y: &Q8Rows, row0: usize, out: &mut [[f32; GROUP]]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: AVX2 and FMA are present; the kernel checks its indices.
            unsafe { avx2::dot_group(self, group, y, row0, out) };
            return;
        }
        dot_group_scalar(self, group, y, row0, out);
    }
}

/// candle's AVX2 arithmetic, one lane at a time.
pub(super) fn dot_group_scalar(
    w: &Q8_0Matrix,
    group: usize,
    y: &Q8Rows,
    row0: usize,
    out: &mut [[f32; GROUP]],
) {
    for (r, lanes) in out.iter_mut().enumerate() {
        let y0 = (row0 + r) * y.blocks;
        for (lane, result) in lanes.iter_mut().enumerate() {
            let mut acc = [0f32; 8];
            for b in 0..w.blocks {
                let at = group * w.blocks + b;
                let (xq, yq) = (&w.qs[at * GROUP + lane], &y.qs[y0 + b]);
                let d = w.d[at][lane] * y.d[y0 + b][0];
                for (k, a) in acc.iter_mut().enumerate() {
                    let q: i32 = (4 * k..4 * k + 4)
                        .map(|t| i32::from(xq[t]) * i32::from(yq[t]))
                        .sum();
                    *a = d.mul_add(q as f32, *a);
                }
            }
            *result = hsum8(acc);
        }
    }
}

/// candle's `hsum_float_8`: halves, then pairs, then the last two.
fn hsum8(a: [f32; 8]) -> f32 {
    let r: [f32; 4] = std::array::from_fn(|i| a[i + 4] + a[i]);
    (r[0] + r[2]) + (r[1] + r[3])
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{GroupKernel, Q8Rows, Q8_0Matrix, GROUP};

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_group(
        w: &Q8_0Matrix,
        group: usize,
        y: &Q8Rows,
        row0: usize,
        out: &mut [[f32; GROUP]],
    ) {
        let blocks = w.blocks();
        let base = group * blocks;
        // Every index below is within these bounds.
        assert!((base + blocks) * GROUP <= w.qs.len() && base + blocks <= w.d.len());
        assert!((row0 + out.len()) * blocks <= y.qs.len() && y.d.len() == y.qs.len());
        let ones = _mm256_set1_epi16(1);
        for (r, lanes) in out.iter_mut().enumerate() {
            let y0 = (row0 + r) * blocks;
            let mut acc = [_mm256_setzero_ps(); GROUP];
            for b in 0..blocks {
                let at = base + b;
                let yq = _mm256_loadu_si256(y.qs.as_ptr().add(y0 + b).cast());
                let dy = y.d[y0 + b][0];
                for (lane, acc_l) in acc.iter_mut().enumerate() {
                    let xq = _mm256_loadu_si256(w.qs.as_ptr().add(at * GROUP + lane).cast());
                    // |x| times y with x's sign: u8 x i8 products in pairs, then fours.
                    let ax = _mm256_sign_epi8(xq, xq);
                    let sy = _mm256_sign_epi8(yq, xq);
                    let pairs = _mm256_maddubs_epi16(ax, sy);
                    let q = _mm256_cvtepi32_ps(_mm256_madd_epi16(ones, pairs));
                    let d = _mm256_set1_ps(w.d[at][lane] * dy);
                    *acc_l = _mm256_fmadd_ps(d, q, *acc_l);
                }
            }
            for (o, a) in lanes.iter_mut().zip(acc) {
                *o = hsum8(a);
            }
        }
    }

    /// candle's `hsum_float_8`.
    #[target_feature(enable = "avx2,fma")]
    fn hsum8(x: __m256) -> f32 {
        let res = _mm_add_ps(_mm256_extractf128_ps::<1>(x), _mm256_castps256_ps128(x));
        let res = _mm_add_ps(res, _mm_movehl_ps(res, res));
        let res = _mm_add_ss(res, _mm_movehdup_ps(res));
        _mm_cvtss_f32(res)
    }
}
