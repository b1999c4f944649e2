//! Each operation against the CPU backend (and the GEMMs against an f64
//! reference): norms, embedding and row gather, linear layers of every weight
//! type, GEMM batch invariance, SiLU·mul.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{CpuStorage, Device, Tensor};
use tessera_model::backend::cpu::{CpuBackend, CpuTensor};
use tessera_model::backend::cuda::{CudaBackend, CudaTensor, DType};
use tessera_model::backend::Backend;
use tessera_model::weights::HostMatrix;

use crate::common::cuda::{assert_close, bf16_round, cuda};
use crate::common::tiny::random_values;
use crate::{seed, BF16_TOL};

const EPS: f32 = 1e-5;

pub fn up(gpu: &CudaBackend, v: &[f32], rows: usize, cols: usize, dtype: DType) -> CudaTensor {
    gpu.tensor_from_host(v, rows, cols, dtype).expect("upload")
}

pub fn down(gpu: &CudaBackend, t: &CudaTensor) -> Vec<f32> {
    gpu.to_host(t).expect("download")
}

pub fn host(v: &[f32], rows: usize, cols: usize) -> CpuTensor {
    CpuTensor::new(v.to_vec(), rows, cols)
}

/// `values` stored as `dtype` (quantized by candle), and what they
/// dequantize to.
fn matrix(
    name: &str,
    dtype: GgmlDType,
    rows: usize,
    cols: usize,
    values: &[f32],
) -> (HostMatrix, Vec<f32>) {
    let t = Tensor::from_vec(values.to_vec(), (rows, cols), &Device::Cpu).expect("tensor");
    let q = QTensor::quantize(&t, dtype).expect("quantize");
    let data = q.data().expect("bytes").to_vec();
    let CpuStorage::F32(deq) = dtype
        .from_data(Cow::Borrowed(&data))
        .dequantize(rows * cols)
        .expect("dequantize")
    else {
        panic!("candle dequantizes to f32");
    };
    let m = HostMatrix {
        name: name.into(),
        dtype,
        rows,
        cols,
        data,
    };
    (m, deq)
}

#[test]
fn norms_match_the_cpu() {
    let Some(gpu) = cuda("norms_match_the_cpu") else {
        return;
    };
    let cpu = CpuBackend::new();
    let s = seed("norms_match_the_cpu");
    for (rows, cols) in [(1, 256), (5, 576), (3, 896), (2, 4096)] {
        let x = random_values(rows * cols, s, 3.0);
        let w: Vec<f32> = random_values(cols, s + 1, 0.5)
            .iter()
            .map(|v| v + 1.0)
            .collect();
        let (w_cpu, w_gpu) = (host(&w, 1, cols), gpu.upload_vector(w.clone()).expect("w"));
        let want = cpu
            .rms_norm(&host(&x, rows, cols), &w_cpu, EPS)
            .expect("cpu")
            .data;
        let got = gpu
            .rms_norm(&up(&gpu, &x, rows, cols, DType::F32), &w_gpu, EPS)
            .expect("rms_norm");
        assert_close(
            &format!("rms_norm {rows}x{cols}"),
            &down(&gpu, &got),
            &want,
            BF16_TOL,
        );

        let delta = bf16_round(&random_values(rows * cols, s + 2, 2.0));
        let mut res_cpu = host(&x, rows, cols);
        let want = cpu
            .add_rms_norm(&mut res_cpu, &host(&delta, rows, cols), &w_cpu, EPS)
            .expect("cpu")
            .data;
        let mut res_gpu = up(&gpu, &x, rows, cols, DType::F32);
        let got = gpu
            .add_rms_norm(
                &mut res_gpu,
                &up(&gpu, &delta, rows, cols, DType::Bf16),
                &w_gpu,
                EPS,
            )
            .expect("add_rms_norm");
        // The residual is f32 + bf16 in f32 on both: the same sums.
        assert_close(
            "add_rms_norm residual",
            &down(&gpu, &res_gpu),
            &res_cpu.data,
            1e-7,
        );
        assert_close("add_rms_norm", &down(&gpu, &got), &want, BF16_TOL);
    }
    for (heads, kv, d) in [(4, 2, 64), (16, 8, 128), (14, 2, 64)] {
        let (rows, cols) = (3, (heads + 2 * kv) * d);
        let x = bf16_round(&random_values(rows * cols, s + 3, 2.0));
        let wq = random_values(d, s + 4, 1.0);
        let wk = random_values(d, s + 5, 1.0);
        let mut x_cpu = host(&x, rows, cols);
        let mut x_gpu = up(&gpu, &x, rows, cols, DType::Bf16);
        let (wq_gpu, wk_gpu) = (
            gpu.upload_vector(wq.clone()).expect("wq"),
            gpu.upload_vector(wk.clone()).expect("wk"),
        );
        cpu.head_rms_norm(&mut x_cpu, &host(&wq, 1, d), 0, heads, d, EPS)
            .expect("cpu");
        cpu.head_rms_norm(&mut x_cpu, &host(&wk, 1, d), heads, kv, d, EPS)
            .expect("cpu");
        gpu.head_rms_norm(&mut x_gpu, &wq_gpu, 0, heads, d, EPS)
            .expect("q norm");
        gpu.head_rms_norm(&mut x_gpu, &wk_gpu, heads, kv, d, EPS)
            .expect("k norm");
        assert_close(
            &format!("head_rms_norm {heads}/{kv}x{d}"),
            &down(&gpu, &x_gpu),
            &x_cpu.data,
            BF16_TOL,
        );
    }
}

#[test]
fn embedding_and_row_gather_copy_exactly() {
    let Some(gpu) = cuda("embedding_and_row_gather_copy_exactly") else {
        return;
    };
    let cpu = CpuBackend::new();
    let s = seed("embedding_and_row_gather_copy_exactly");
    let (vocab, hidden) = (300, 256);
    for dtype in [GgmlDType::F32, GgmlDType::Q8_0, GgmlDType::Q4K] {
        let (m, deq) = matrix(
            "token_embd.weight",
            dtype,
            vocab,
            hidden,
            &random_values(vocab * hidden, s, 1.0),
        );
        let table_cpu = cpu.upload_linear(vec![m.clone()], None).expect("cpu table");
        let table_gpu = gpu.upload_linear(vec![m], None).expect("table");
        let ids = [5u32, 0, 299, 5, 17];
        let got = down(&gpu, &gpu.embedding(&table_gpu, &ids).expect("embedding"));
        // The device holds the dequantized table rounded to bf16: exactly that.
        let want: Vec<f32> = ids
            .iter()
            .flat_map(|&i| bf16_round(&deq[i as usize * hidden..(i as usize + 1) * hidden]))
            .collect();
        assert_eq!(got, want, "{dtype:?}");
        let cpu_rows = cpu.embedding(&table_cpu, &ids).expect("cpu").data;
        assert_close(
            &format!("embedding {dtype:?} vs cpu"),
            &got,
            &cpu_rows,
            BF16_TOL,
        );
        let err = gpu
            .embedding(&table_gpu, &[vocab as u32])
            .map(|_| ())
            .unwrap_err();
        assert!(
            err.to_string().contains("outside the embedding table"),
            "{err}"
        );
    }
    let x = bf16_round(&random_values(6 * 64, s + 1, 1.0));
    let picked = gpu
        .gather_rows(&up(&gpu, &x, 6, 64, DType::Bf16), &[5, 0, 3])
        .expect("gather");
    let want: Vec<f32> = [5, 0, 3]
        .iter()
        .flat_map(|&r| x[r * 64..(r + 1) * 64].to_vec())
        .collect();
    assert_eq!(down(&gpu, &picked), want);
    assert!(gpu
        .gather_rows(&up(&gpu, &x, 6, 64, DType::Bf16), &[6])
        .is_err());
}

/// `x [m, k] @ w [n, k]^T + bias` in f64.
fn reference(x: &[f32], w: &[f32], bias: &[f32], (m, n, k): (usize, usize, usize)) -> Vec<f32> {
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k)
                .map(|p| f64::from(x[i * k + p]) * f64::from(w[j * k + p]))
                .sum();
            out.push((dot + f64::from(bias[j])) as f32);
        }
    }
    out
}

#[test]
fn linear_layers_of_every_weight_type_match_f64() {
    let Some(gpu) = cuda("linear_layers_of_every_weight_type_match_f64") else {
        return;
    };
    let cpu = CpuBackend::new();
    let s = seed("linear_layers_of_every_weight_type_match_f64");
    let (n1, n2, k) = (384, 128, 512);
    let scale = 1.0 / (k as f32).sqrt();
    for dtype in [
        GgmlDType::F32,
        GgmlDType::F16,
        GgmlDType::Q8_0,
        GgmlDType::Q4_0,
        GgmlDType::Q4K,
        GgmlDType::Q6K,
    ] {
        // Two parts fused into one matrix (as Q|K|V), with a bias.
        let (a, deq_a) = matrix("a", dtype, n1, k, &random_values(n1 * k, s, scale));
        let (b, deq_b) = matrix("b", dtype, n2, k, &random_values(n2 * k, s + 1, scale));
        let bias = random_values(n1 + n2, s + 2, 0.5);
        let w: Vec<f32> = bf16_round(&[deq_a, deq_b].concat());
        let layer = gpu
            .upload_linear(vec![a.clone(), b.clone()], Some(bias.clone()))
            .expect("upload");
        let cpu_layer = cpu
            .upload_linear(vec![a, b], Some(bias.clone()))
            .expect("cpu upload");
        for m in [1, 3, 64, 100] {
            let x = bf16_round(&random_values(m * k, s + 3 + m as u64, 1.0));
            let want = reference(&x, &w, &bias, (m, n1 + n2, k));
            let xg = up(&gpu, &x, m, k, DType::Bf16);
            let what = format!("linear {dtype:?} m={m}");
            assert_close(
                &what,
                &down(&gpu, &gpu.linear(&xg, &layer).expect("linear")),
                &want,
                BF16_TOL,
            );
            // f32 output: exact products, f32 sums in the tensor cores' order
            // (whose adders keep fewer guard bits than IEEE f32).
            let logits = down(&gpu, &gpu.logits(&xg, &layer).expect("logits"));
            assert_close(&format!("{what} (f32 out)"), &logits, &want, 1e-4);
            // The CPU keeps f32 weights exactly and rounds activations of
            // quantized layers to 8 bits.
            let tol = if matches!(dtype, GgmlDType::F32 | GgmlDType::F16) {
                BF16_TOL
            } else {
                3e-2
            };
            let on_cpu = cpu.linear(&host(&x, m, k), &cpu_layer).expect("cpu").data;
            assert_close(&format!("{what} vs cpu"), &logits, &on_cpu, tol);
        }
    }
}

#[test]
fn gemm_rows_do_not_depend_on_the_batch_size() {
    let Some(gpu) = cuda("gemm_rows_do_not_depend_on_the_batch_size") else {
        return;
    };
    let s = seed("gemm_rows_do_not_depend_on_the_batch_size");
    // SmolLM2's QKV and down projections, a Llama-3 MLP, a vocabulary.
    for (n, k) in [(960, 576), (576, 1536), (28672, 4096), (49152, 576)] {
        let (w, _) = matrix("w", GgmlDType::F32, n, k, &random_values(n * k, s, 0.05));
        let layer = gpu.upload_linear(vec![w], None).expect("upload");
        let x = bf16_round(&random_values(200 * k, s + 1, 1.0));
        let rows = |m: usize, f32_out: bool| {
            let t = up(&gpu, &x[..m * k], m, k, DType::Bf16);
            let y = if f32_out {
                gpu.logits(&t, &layer)
            } else {
                gpu.linear(&t, &layer)
            };
            down(&gpu, &y.expect("gemm"))
        };
        for f32_out in [false, true] {
            let alone: Vec<Vec<f32>> = (0..8)
                .map(|r| {
                    let t = up(&gpu, &x[r * k..(r + 1) * k], 1, k, DType::Bf16);
                    let y = if f32_out {
                        gpu.logits(&t, &layer)
                    } else {
                        gpu.linear(&t, &layer)
                    };
                    down(&gpu, &y.expect("gemm"))
                })
                .collect();
            for m in [2, 5, 8, 64, 200] {
                let batch = rows(m, f32_out);
                for (r, row) in alone.iter().enumerate().take(m) {
                    assert!(
                        batch[r * n..(r + 1) * n] == row[..],
                        "{n}x{k} (f32 out: {f32_out}): row {r} differs in a batch of {m}"
                    );
                }
            }
        }
    }
}

#[test]
fn silu_mul_matches_the_cpu() {
    let Some(gpu) = cuda("silu_mul_matches_the_cpu") else {
        return;
    };
    let cpu = CpuBackend::new();
    let s = seed("silu_mul_matches_the_cpu");
    for (rows, inter) in [(1, 300), (7, 1536), (2, 14336)] {
        let g = bf16_round(&random_values(rows * 2 * inter, s, 4.0));
        let want = cpu.silu_mul(&host(&g, rows, 2 * inter)).expect("cpu").data;
        let got = gpu
            .silu_mul(&up(&gpu, &g, rows, 2 * inter, DType::Bf16))
            .expect("silu_mul");
        assert_close(
            &format!("silu_mul {rows}x{inter}"),
            &down(&gpu, &got),
            &want,
            BF16_TOL,
        );
    }
}
