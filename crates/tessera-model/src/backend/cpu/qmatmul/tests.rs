//! The kernels against candle's matmuls for the same types (equal up to
//! rounding, on every shape), and each kernel's SIMD paths against its scalar
//! reference (the same bits).

use std::borrow::Cow;

use candle_core::quantized::GgmlDType;
use candle_core::CpuStorage;
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::activations::{quantize, round_to_i8};
use super::*;

/// Random GGUF bytes of `dtype`: scales (and mins) of realistic size, random quants.
fn random_weights(rng: &mut StdRng, dtype: GgmlDType, rows: usize, cols: usize) -> Vec<u8> {
    let mut data = Vec::new();
    for _ in 0..rows * cols / QK {
        let d = f16::from_f32(rng.random_range(0.0f32..0.05));
        data.extend_from_slice(&d.to_le_bytes());
        match dtype {
            GgmlDType::Q4_1 => {
                let m = f16::from_f32(rng.random_range(-0.4f32..0.0));
                data.extend_from_slice(&m.to_le_bytes());
                data.extend((0..QK / 2).map(|_| rng.random::<u8>()));
            }
            GgmlDType::Q8_0 => data.extend((0..QK).map(|_| rng.random::<u8>())),
            other => panic!("no kernel for {other:?}"),
        }
    }
    data
}

fn random_activations(rng: &mut StdRng, n: usize) -> Vec<f32> {
    // Some blocks all zero (d = 0 path), the rest spread over a few magnitudes.
    (0..n)
        .map(|i| {
            if (i / QK) % 7 == 3 {
                0.0
            } else {
                rng.random_range(-1.0f32..1.0) * 10f32.powi(rng.random_range(-2..2))
            }
        })
        .collect()
}

/// Our matmul for `dtype` on GGUF bytes.
fn ours(dtype: GgmlDType, data: &[u8], rows: usize, cols: usize, x: &[f32], m: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * rows];
    match dtype {
        GgmlDType::Q4_1 => Q4_1Matrix::from_gguf_bytes(data, rows, cols)
            .expect("repacks")
            .matmul_t(x, m, &mut out),
        _ => Q8_0Matrix::from_gguf_bytes(data, rows, cols)
            .expect("repacks")
            .matmul_t(x, m, &mut out),
    }
    out
}

fn candle(
    dtype: GgmlDType,
    data: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    m: usize,
) -> Vec<f32> {
    let w = dtype.from_data(Cow::Borrowed(data));
    let mut out = vec![0f32; m * rows];
    w.matmul_t((m, cols, rows), x, &mut out)
        .expect("candle matmul");
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Q4_1 and Q8_0 sum their blocks in another order than candle: equal up to
/// rounding.
#[test]
fn kernels_match_candle_up_to_rounding() {
    let mut rng = StdRng::seed_from_u64(8);
    for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
        // Row counts off the group size, activation counts off the row tile,
        // and the default model's widths. (candle requires an even block count.)
        for (rows, cols) in [(1, 64), (5, 64), (9, 128), (13, 576), (17, 1536)] {
            let data = random_weights(&mut rng, dtype, rows, cols);
            for m in [1, 2, 3, 4, 5, 9] {
                let x = random_activations(&mut rng, m * cols);
                let ours = ours(dtype, &data, rows, cols, &x, m);
                let reference = candle(dtype, &data, rows, cols, &x, m);
                let scale = reference.iter().fold(1e-3f32, |a, v| a.max(v.abs()));
                for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
                    assert!(
                        (a - b).abs() <= 4e-6 * scale * (cols / QK) as f32,
                        "{dtype:?} {rows}x{cols}, {m} rows, output {i}: {a} vs candle {b}"
                    );
                }
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Every Q4_1 kernel this CPU can run equals the scalar reference bit for
    /// bit, on ragged shapes: row counts off the group, any tile, any block count.
    #[test]
    fn q4_1_kernels_equal_the_scalar_reference(
        rows in 1usize..20,
        blocks in 1usize..7,
        m in 1usize..18,
        seed in 0u64..1000,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let cols = blocks * QK;
        let x = random_activations(&mut rng, m * cols);
        let y = quantize(&x, m, blocks);
        let data = random_weights(&mut rng, GgmlDType::Q4_1, rows, cols);
        let w = Q4_1Matrix::from_gguf_bytes(&data, rows, cols).expect("repacks");
        let rows8 = q4_1::ROWS;
        for group in 0..rows.div_ceil(rows8) {
            for row0 in 0..m {
                let tile = (m - row0).min(q4_1::TILE);
                let mut slow = vec![0f32; tile * rows8];
                q4_1::dot_group_scalar(&w, group, &y, row0, &mut slow);
                #[cfg(target_arch = "x86_64")]
                for level in [x86::Level::Avx2, x86::Level::Vnni] {
                    let mut fast = vec![0f32; tile * rows8];
                    if q4_1_x86::dot_group_at(level, &w, group, &y, row0, &mut fast) {
                        proptest::prop_assert_eq!(bits(&fast), bits(&slow), "{:?}", level);
                    }
                }
            }
        }
    }

    /// Every Q8_0 kernel this CPU can run equals the scalar reference bit for
    /// bit, on ragged shapes: row counts off the group, any tile, any block count.
    #[test]
    fn q8_0_kernels_equal_the_scalar_reference(
        rows in 1usize..20,
        blocks in 1usize..7,
        m in 1usize..10,
        seed in 0u64..1000,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let cols = blocks * QK;
        let x = random_activations(&mut rng, m * cols);
        let y = quantize(&x, m, blocks);
        let data = random_weights(&mut rng, GgmlDType::Q8_0, rows, cols);
        let w = Q8_0Matrix::from_gguf_bytes(&data, rows, cols).expect("repacks");
        let rows8 = q8_0::ROWS;
        for group in 0..rows.div_ceil(rows8) {
            for row0 in 0..m {
                let tile = (m - row0).min(ROW_TILE);
                let mut slow = vec![0f32; tile * rows8];
                q8_0::dot_group_scalar(&w, group, &y, row0, &mut slow);
                #[cfg(target_arch = "x86_64")]
                for level in [x86::Level::Avx2, x86::Level::Vnni] {
                    let mut fast = vec![0f32; tile * rows8];
                    if q8_0_x86::dot_group_at(level, &w, group, &y, row0, &mut fast) {
                        proptest::prop_assert_eq!(bits(&fast), bits(&slow), "{:?}", level);
                    }
                }
            }
        }
    }
}

/// The AVX2 block quantizer equals the portable one on every value,
/// including halves (the rounding edge), out-of-range, infinite and NaN inputs.
#[cfg(target_arch = "x86_64")]
#[test]
fn simd_quantization_equals_the_portable_code() {
    use super::activations::{amax_portable, avx2, quantize_row_portable, round_block_portable};
    if !avx2::available() {
        eprintln!("no AVX2 here: nothing to compare");
        return;
    }
    let mut rng = StdRng::seed_from_u64(17);
    let mut row = Vec::new();
    let specials = [
        0.5,
        -0.5,
        1.5,
        -2.5,
        126.5,
        -127.5,
        127.49,
        0.49999997,
        -0.0,
        1e10,
        -1e10,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        300.0,
        -129.0,
        f32::MIN_POSITIVE,
    ];
    for case in 0..2000 {
        let xs: [f32; QK] = std::array::from_fn(|i| {
            if case % 3 == 0 && i % 4 == 0 {
                specials[(case + i) % specials.len()]
            } else if case % 3 == 1 {
                // Whole and half steps after scaling by 1.
                (rng.random_range(-300i32..300) as f32) * 0.5
            } else {
                rng.random_range(-4.0f32..4.0)
            }
        });
        let inverse = if case % 3 == 1 {
            1.0
        } else {
            rng.random_range(0.0f32..100.0)
        };
        // SAFETY: AVX2 was checked above.
        let (simd_max, mut simd_q) = (unsafe { avx2::amax(&xs) }, [0i8; QK]);
        unsafe { avx2::round_block(&xs, inverse, &mut simd_q) };
        let mut q = [0i8; QK];
        round_block_portable(&xs, inverse, &mut q);
        assert_eq!(simd_max.to_bits(), amax_portable(&xs).to_bits(), "{xs:?}");
        assert_eq!(simd_q, q, "{xs:?} x {inverse}");
        row.extend_from_slice(&xs);
    }
    // Whole rows, scales and sums included.
    let blocks = row.len() / QK;
    let quantized = |simd: bool| {
        let (mut qs, mut d) = (vec![[0i8; QK]; blocks], vec![[0f32; 4]; blocks]);
        let (mut s, mut sums) = (vec![0f32; blocks], vec![0i32; blocks]);
        if simd {
            // SAFETY: AVX2 was checked above.
            unsafe { avx2::quantize_row(&row, &mut qs, &mut d, &mut s, &mut sums) };
        } else {
            quantize_row_portable(&row, &mut qs, &mut d, &mut s, &mut sums);
        }
        let d: Vec<u32> = d.iter().flatten().map(|x| x.to_bits()).collect();
        let s: Vec<u32> = s.iter().map(|x| x.to_bits()).collect();
        (qs, d, s, sums)
    };
    assert!(quantized(true) == quantized(false));
}

#[test]
fn a_row_alone_equals_the_row_in_a_batch() {
    let mut rng = StdRng::seed_from_u64(3);
    let (rows, cols, m) = (11, 192, 7);
    for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
        let data = random_weights(&mut rng, dtype, rows, cols);
        let x = random_activations(&mut rng, m * cols);
        let batched = ours(dtype, &data, rows, cols, &x, m);
        for r in 0..m {
            let alone = ours(dtype, &data, rows, cols, &x[r * cols..(r + 1) * cols], 1);
            assert_eq!(bits(&alone), bits(&batched[r * rows..(r + 1) * rows]));
        }
    }
}

#[test]
fn dequantized_rows_match_candle() {
    let mut rng = StdRng::seed_from_u64(5);
    let (rows, cols) = (6, 96);
    for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
        let data = random_weights(&mut rng, dtype, rows, cols);
        let candle = dtype.from_data(Cow::Borrowed(&data));
        let CpuStorage::F32(all) = candle.dequantize(rows * cols).expect("dequantizes") else {
            panic!("candle dequantizes to f32");
        };
        for r in 0..rows {
            let mut row = vec![0f32; cols];
            match dtype {
                GgmlDType::Q4_1 => Q4_1Matrix::from_gguf_bytes(&data, rows, cols)
                    .expect("repacks")
                    .dequantize_row(r, &mut row),
                _ => Q8_0Matrix::from_gguf_bytes(&data, rows, cols)
                    .expect("repacks")
                    .dequantize_row(r, &mut row),
            }
            assert_eq!(
                bits(&row),
                bits(&all[r * cols..(r + 1) * cols]),
                "{dtype:?} row {r}"
            );
        }
    }
}

#[test]
fn rounding_matches_round_then_cast() {
    let mut rng = StdRng::seed_from_u64(9);
    let specials = [
        0.0,
        -0.0,
        0.5,
        -0.5,
        1.5,
        -1.5,
        2.5,
        126.5,
        -127.5,
        127.49999,
        0.49999997,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        3e9,
        -3e9,
        1e-30,
    ];
    let random = (0..10_000).map(|_| rng.random_range(-130.0f32..130.0));
    for v in specials.into_iter().chain(random) {
        assert_eq!(round_to_i8(v), v.round() as i8, "{v}");
    }
}

#[test]
fn rejects_bytes_that_do_not_fit_the_shape() {
    assert!(Q4_1Matrix::from_gguf_bytes(&[0u8; 40], 1, 32).is_err());
    assert!(Q4_1Matrix::from_gguf_bytes(&[0u8; 20], 1, 16).is_err());
    assert!(Q4_1Matrix::from_gguf_bytes(&[0u8; 40], 2, 32).is_ok());
    assert!(Q8_0Matrix::from_gguf_bytes(&[0u8; 34], 2, 32).is_err());
    assert!(Q8_0Matrix::from_gguf_bytes(&[0u8; 68], 2, 32).is_ok());
}
