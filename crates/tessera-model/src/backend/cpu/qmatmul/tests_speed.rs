//! A quick timing of the Q4_0, Q4_K and Q6_K kernels against candle's, until
//! the criterion benchmarks cover them. Run in release, ignored by default:
//! `cargo test --release -p tessera-model --lib speed -- --ignored --nocapture`

use std::borrow::Cow;
use std::time::{Duration, Instant};

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// `out = x @ W^T` for `m` rows of `x`.
type Matmul = dyn Fn(&[f32], usize, &mut [f32]);

/// Mean time of `f` over enough calls to fill about 0.3 s, after a warm-up.
fn time(mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    let mut calls = 0u32;
    while start.elapsed() < Duration::from_millis(50) {
        f();
        calls += 1;
    }
    let n = (calls * 6).max(3);
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed() / n
}

/// GGUF bytes of `dtype` from random values (candle's quantizer).
fn weights(dtype: GgmlDType, rows: usize, cols: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(1);
    let v: Vec<f32> = (0..rows * cols)
        .map(|_| rng.random_range(-0.1..0.1))
        .collect();
    let t = Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap();
    QTensor::quantize(&t, dtype)
        .unwrap()
        .data()
        .unwrap()
        .to_vec()
}

#[test]
#[ignore = "timing, not a check: run by hand in release"]
fn speed_against_candle() {
    println!("dtype  rows x cols   m   tessera µs (GFLOP/s)   candle QMatMul µs (GFLOP/s)   candle matmul_t µs");
    for dtype in [GgmlDType::Q4_0, GgmlDType::Q4K, GgmlDType::Q6K] {
        // K-quants need a multiple of 256 inputs: 768 stands in for 576 there.
        let narrow = if dtype == GgmlDType::Q4_0 { 576 } else { 768 };
        for (rows, cols) in [(narrow, 1536), (1536, narrow)] {
            let data = weights(dtype, rows, cols);
            let storage = QStorage::from_data(Cow::Borrowed(&data), &Device::Cpu, dtype).unwrap();
            let qmatmul =
                QMatMul::from_qtensor(QTensor::new(storage, (rows, cols)).unwrap()).unwrap();
            let generic = dtype.from_data(Cow::Borrowed(&data));
            let ours: Box<Matmul> = match dtype {
                GgmlDType::Q4_0 => {
                    let w = Q4_0Matrix::from_gguf_bytes(&data, rows, cols).unwrap();
                    Box::new(move |x, m, out| w.matmul_t(x, m, out))
                }
                GgmlDType::Q4K => {
                    let w = Q4KMatrix::from_gguf_bytes(&data, rows, cols).unwrap();
                    Box::new(move |x, m, out| w.matmul_t(x, m, out))
                }
                _ => {
                    let w = Q6KMatrix::from_gguf_bytes(&data, rows, cols).unwrap();
                    Box::new(move |x, m, out| w.matmul_t(x, m, out))
                }
            };
            for m in [1, 64] {
                let mut rng = StdRng::seed_from_u64(2);
                let x: Vec<f32> = (0..m * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
                let xt = Tensor::from_slice(&x, (m, cols), &Device::Cpu).unwrap();
                let mut out = vec![0f32; m * rows];
                let t_ours = time(|| ours(&x, m, &mut out));
                let t_qmm = time(|| drop(qmatmul.forward(&xt).unwrap()));
                let t_gen = time(|| generic.matmul_t((m, cols, rows), &x, &mut out).unwrap());
                let gflops = |t: Duration| 2.0 * (m * rows * cols) as f64 / t.as_secs_f64() / 1e9;
                println!(
                    "{:5} {rows:4} x {cols:4} {m:3}   {:8.1} ({:5.1})          {:8.1} ({:5.1})              {:8.1}",
                    format!("{dtype:?}"),
                    t_ours.as_secs_f64() * 1e6,
                    gflops(t_ours),
                    t_qmm.as_secs_f64() * 1e6,
                    gflops(t_qmm),
                    t_gen.as_secs_f64() * 1e6,
                );
            }
        }
    }
}
