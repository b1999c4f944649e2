//! The Q4_0, Q4_K and Q6_K kernels: SIMD against the scalar reference (the same
//! bits), the whole matmul against f64 on the dequantized weights (within the
//! activation quantization's bound) and against candle's `QMatMul` (within
//! float rounding), batch invariance, and the Q8_K quantizer against candle's.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{CpuStorage, Device, Module, Tensor};
use half::f16;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::q8_k::{quantize_block, Q8KBlock, QK_K};
use super::superblocks::SuperBlockKernel;
use super::*;

const DTYPES: [GgmlDType; 3] = [GgmlDType::Q4_0, GgmlDType::Q4K, GgmlDType::Q6K];

/// Values per GGUF block of `dtype`.
fn block_len(dtype: GgmlDType) -> usize {
    if dtype == GgmlDType::Q4_0 {
        QK
    } else {
        QK_K
    }
}

/// Random GGUF bytes: scales of realistic size, every other byte random. With
/// `extreme`, every quant and scale at its largest, for the integer bounds.
fn weights(seed: u64, dtype: GgmlDType, rows: usize, cols: usize, extreme: bool) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut data = Vec::new();
    let f16s = |rng: &mut StdRng, data: &mut Vec<u8>, n: usize, max: f32| {
        for _ in 0..n {
            data.extend(f16::from_f32(rng.random_range(0.0..max)).to_le_bytes());
        }
    };
    let bytes = |rng: &mut StdRng, data: &mut Vec<u8>, n: usize, fill: u8| {
        data.extend((0..n).map(|_| if extreme { fill } else { rng.random() }));
    };
    for _ in 0..rows * cols / block_len(dtype) {
        match dtype {
            GgmlDType::Q4_0 => {
                f16s(&mut rng, &mut data, 1, 0.05);
                bytes(&mut rng, &mut data, 16, 0xFF);
            }
            GgmlDType::Q4K => {
                f16s(&mut rng, &mut data, 2, 0.01);
                bytes(&mut rng, &mut data, 12 + 128, 0xFF);
            }
            GgmlDType::Q6K => {
                bytes(&mut rng, &mut data, 128 + 64, 0xFF);
                bytes(&mut rng, &mut data, 16, 0x80);
                f16s(&mut rng, &mut data, 1, 0.002);
            }
            other => panic!("no kernel for {other:?}"),
        }
    }
    data
}

/// Random activations: some blocks zero, the rest over a few magnitudes. With
/// `extreme`, all -1 (every activation quantizes to -127).
fn activations(seed: u64, n: usize, extreme: bool) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| match () {
            _ if extreme => -1.0,
            _ if (i / QK) % 7 == 3 => 0.0,
            _ => rng.random_range(-1.0f32..1.0) * 10f32.powi(rng.random_range(-2..2)),
        })
        .collect()
}

enum Ours {
    Q4_0(Q4_0Matrix),
    Q4K(Q4KMatrix),
    Q6K(Q6KMatrix),
}

impl Ours {
    fn new(dtype: GgmlDType, data: &[u8], rows: usize, cols: usize) -> Self {
        match dtype {
            GgmlDType::Q4_0 => Self::Q4_0(Q4_0Matrix::from_gguf_bytes(data, rows, cols).unwrap()),
            GgmlDType::Q4K => Self::Q4K(Q4KMatrix::from_gguf_bytes(data, rows, cols).unwrap()),
            _ => Self::Q6K(Q6KMatrix::from_gguf_bytes(data, rows, cols).unwrap()),
        }
    }

    fn rows(&self) -> usize {
        match self {
            Self::Q4_0(w) => w.rows(),
            Self::Q4K(w) => w.rows(),
            Self::Q6K(w) => w.rows(),
        }
    }

    fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut out = vec![f32::NAN; m * self.rows()];
        match self {
            Self::Q4_0(w) => w.matmul_t(x, m, &mut out),
            Self::Q4K(w) => w.matmul_t(x, m, &mut out),
            Self::Q6K(w) => w.matmul_t(x, m, &mut out),
        }
        out
    }

    fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        match self {
            Self::Q4_0(w) => w.dequantize_row(row, out),
            Self::Q4K(w) => w.dequantize_row(row, out),
            Self::Q6K(w) => w.dequantize_row(row, out),
        }
    }

    /// `dmin * m` of each value of `row` (Q4_K's subtracted part), else 0.
    fn min_part(&self, row: usize, cols: usize) -> Vec<f32> {
        let Self::Q4K(w) = self else {
            return vec![0.0; cols];
        };
        let (group, lane) = (row / GROUP, row % GROUP);
        let sbs = cols / QK_K;
        (0..cols)
            .map(|v| {
                let b = &w.blocks[group * sbs + v / QK_K];
                let s = (v % QK_K) / QK;
                b.dmin[lane] * f32::from(b.mins[s / 4][lane][s % 4])
            })
            .collect()
    }

    /// Every group and tile through the dispatched kernel and the scalar
    /// reference; panics where they differ in any bit.
    fn check_kernel_against_reference(&self, x: &[f32], m: usize, cols: usize) {
        let tiles: Vec<(usize, usize)> = (0..m)
            .map(|row0| (row0, (m - row0).min(ROW_TILE)))
            .collect();
        for group in 0..self.rows().div_ceil(GROUP) {
            for &(row0, len) in &tiles {
                let (mut fast, mut slow) = (vec![[0f32; GROUP]; len], vec![[1f32; GROUP]; len]);
                match self {
                    Self::Q4_0(w) => {
                        let y = activations::quantize(x, m, cols / QK);
                        w.dot_group(group, &y, row0, fast.as_flattened_mut());
                        q4_0::dot_group_scalar(w, group, &y, row0, &mut slow);
                    }
                    Self::Q4K(w) => {
                        let y = q8_k::quantize(x, m, cols / QK_K);
                        w.dot_group(group, &y, row0, &mut fast);
                        q4_k::dot_group_scalar(w, group, &y, row0, &mut slow);
                    }
                    Self::Q6K(w) => {
                        let y = q8_k::quantize(x, m, cols / QK_K);
                        w.dot_group(group, &y, row0, &mut fast);
                        q6_k::dot_group_scalar(w, group, &y, row0, &mut slow);
                    }
                }
                assert_eq!(
                    bits(&fast),
                    bits(&slow),
                    "group {group}, rows {row0}..+{len}"
                );
            }
        }
    }
}

fn bits(v: &[[f32; GROUP]]) -> Vec<u32> {
    v.iter().flatten().map(|x| x.to_bits()).collect()
}

fn candle_qmatmul(
    dtype: GgmlDType,
    data: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    m: usize,
) -> Vec<f32> {
    let storage = QStorage::from_data(Cow::Borrowed(data), &Device::Cpu, dtype).unwrap();
    let w = QMatMul::from_qtensor(QTensor::new(storage, (rows, cols)).unwrap()).unwrap();
    let x = Tensor::from_slice(x, (m, cols), &Device::Cpu).unwrap();
    w.forward(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// A bound on `|x - dequantized(quantized(x))|` per value: half a step of
/// the block's activation scale, plus (Q8_0) the scale's rounding to f16.
fn activation_error(dtype: GgmlDType, x: &[f32]) -> Vec<f64> {
    let block = block_len(dtype);
    x.chunks(block)
        .flat_map(|b| {
            let d = f64::from(b.iter().fold(0f32, |m, v| m.max(v.abs()))) / 127.0;
            let e = if dtype == GgmlDType::Q4_0 {
                0.51 * d + 127.0 * (d / 2048.0 + 2f64.powi(-25))
            } else {
                0.51 * d
            };
            std::iter::repeat_n(e, block)
        })
        .collect()
}

/// Shapes: rows off the group size, blocks of several counts, 1..=9 rows.
fn shape() -> impl Strategy<Value = (GgmlDType, usize, usize, usize)> {
    (0..3usize, 1usize..14, 1usize..8, 1usize..10).prop_map(|(t, rows, blocks, m)| {
        let dtype = DTYPES[t];
        let blocks = if dtype == GgmlDType::Q4_0 {
            blocks
        } else {
            blocks.div_ceil(2)
        };
        (dtype, rows, blocks * block_len(dtype), m)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn simd_kernels_equal_the_scalar_reference(
        (dtype, rows, cols, m) in shape(), seed in any::<u64>(), extreme in prop::bool::weighted(0.1),
    ) {
        let w = Ours::new(dtype, &weights(seed, dtype, rows, cols, extreme), rows, cols);
        w.check_kernel_against_reference(&activations(seed ^ 1, m * cols, extreme), m, cols);
    }

    #[test]
    fn matmul_is_within_the_quantization_bound_of_f64(
        (dtype, rows, cols, m) in shape(), seed in any::<u64>(), extreme in prop::bool::weighted(0.1),
    ) {
        let w = Ours::new(dtype, &weights(seed, dtype, rows, cols, extreme), rows, cols);
        let x = activations(seed ^ 1, m * cols, extreme);
        let ours = w.matmul(&x, m);
        let mut row = vec![0f32; cols];
        for n in 0..rows {
            w.dequantize_row(n, &mut row);
            let min_part = w.min_part(n, cols);
            for (r, xs) in x.chunks(cols).enumerate() {
                let err = activation_error(dtype, xs);
                let (mut want, mut bound, mut size) = (0f64, 0f64, 0f64);
                for i in 0..cols {
                    let (wi, xi) = (f64::from(row[i]), f64::from(xs[i]));
                    want += wi * xi;
                    bound += wi.abs() * err[i];
                    size += xi.abs() * (wi.abs() + 2.0 * f64::from(min_part[i]).abs());
                }
                let got = f64::from(ours[r * rows + n]);
                let tol = bound + 1e-5 * size + 1e-30;
                prop_assert!((got - want).abs() <= tol, "{dtype:?} row {r} col {n}: {got} vs {want} (tol {tol})");
            }
        }
    }

    #[test]
    fn matmul_is_close_to_candle(
        (dtype, rows, cols, m) in shape(), seed in any::<u64>(),
    ) {
        let data = weights(seed, dtype, rows, cols, false);
        let w = Ours::new(dtype, &data, rows, cols);
        let x = activations(seed ^ 1, m * cols, false);
        let ours = w.matmul(&x, m);
        let theirs = candle_qmatmul(dtype, &data, rows, cols, &x, m);
        let mut row = vec![0f32; cols];
        for n in 0..rows {
            w.dequantize_row(n, &mut row);
            let min_part = w.min_part(n, cols);
            for (r, xs) in x.chunks(cols).enumerate() {
                // The same integers; only the float steps' order differs.
                let size: f32 = (0..cols).map(|i| xs[i].abs() * (row[i].abs() + 2.0 * min_part[i].abs())).sum();
                let (a, b) = (ours[r * rows + n], theirs[r * rows + n]);
                prop_assert!((a - b).abs() <= 1e-6 * size + 1e-30, "{dtype:?} row {r} col {n}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn a_row_alone_equals_the_row_in_a_batch(
        (dtype, rows, cols, m) in shape(), seed in any::<u64>(),
    ) {
        let w = Ours::new(dtype, &weights(seed, dtype, rows, cols, false), rows, cols);
        let x = activations(seed ^ 1, m * cols, false);
        let batched = w.matmul(&x, m);
        for (r, xs) in x.chunks(cols).enumerate() {
            let alone = w.matmul(xs, 1);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&alone), bits(&batched[r * rows..(r + 1) * rows]));
        }
    }
}

#[test]
fn dequantized_rows_match_candle() {
    for dtype in DTYPES {
        let (rows, cols) = (6, 2 * QK_K);
        let data = weights(5, dtype, rows, cols, false);
        let CpuStorage::F32(all) = dtype
            .from_data(Cow::Borrowed(&data))
            .dequantize(rows * cols)
            .unwrap()
        else {
            panic!("candle dequantizes to f32");
        };
        let w = Ours::new(dtype, &data, rows, cols);
        let mut row = vec![0f32; cols];
        for r in 0..rows {
            w.dequantize_row(r, &mut row);
            let same = row
                .iter()
                .zip(&all[r * cols..])
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{dtype:?} row {r}");
        }
    }
}

/// Our Q8_K blocks, SIMD and portable, hold candle's bytes (f32 d, 256 i8,
/// 16 i16 sums), ties of the largest magnitude and odd values included.
#[test]
fn q8k_quantization_matches_candle() {
    let mut rng = StdRng::seed_from_u64(23);
    let specials = [0.5, -2.5, 3.0, -3.0, 1e-30, f32::INFINITY, f32::NAN, -0.0];
    for case in 0..300 {
        let xs: Vec<f32> = (0..QK_K)
            .map(|i| match case % 4 {
                0 if i % 5 == 0 => specials[(case / 4 + i) % specials.len()],
                1 => (rng.random_range(-40i32..40) as f32) * 0.25, // ties: +-10 both present
                2 => 0.0,
                _ => rng.random_range(-3.0f32..3.0),
            })
            .collect();
        let t = Tensor::from_slice(&xs, (1, QK_K), &Device::Cpu).unwrap();
        let theirs = QTensor::quantize(&t, GgmlDType::Q8K)
            .unwrap()
            .data()
            .unwrap()
            .to_vec();
        for portable in [false, true] {
            let mut b = Q8KBlock {
                qs: [[7; QK]; QK_K / QK],
                bsums: [7; 16],
                sums32: [7; 8],
                d: 7.0,
            };
            quantize_block(&xs, &mut b, portable);
            let mut ours = b.d.to_le_bytes().to_vec();
            ours.extend(b.qs.iter().flatten().map(|&q| q as u8));
            ours.extend(b.bsums.iter().flat_map(|s| s.to_le_bytes()));
            assert_eq!(ours, theirs, "case {case}, portable {portable}");
            for (j, s) in b.sums32.iter().enumerate() {
                assert_eq!(*s, b.bsums[2 * j] + b.bsums[2 * j + 1]);
            }
        }
    }
}

#[test]
fn rejects_bytes_that_do_not_fit_the_shape() {
    assert!(Q4_0Matrix::from_gguf_bytes(&[0u8; 36], 1, 32).is_err());
    assert!(Q4_0Matrix::from_gguf_bytes(&[0u8; 18], 1, 16).is_err());
    assert!(Q4_0Matrix::from_gguf_bytes(&[0u8; 36], 2, 32).is_ok());
    assert!(Q4KMatrix::from_gguf_bytes(&[0u8; 144], 1, 128).is_err());
    assert!(Q4KMatrix::from_gguf_bytes(&[0u8; 144], 2, 256).is_err());
    assert!(Q4KMatrix::from_gguf_bytes(&[0u8; 288], 2, 256).is_ok());
    assert!(Q6KMatrix::from_gguf_bytes(&[0u8; 209], 1, 256).is_err());
    assert!(Q6KMatrix::from_gguf_bytes(&[0u8; 420], 1, 512).is_ok());
}
