//! Whole models on the GPU: tiny random-weight Llama (GGUF, own and tied LM
//! head) and Qwen2 (safetensors, QKV bias) against the CPU backend; a
//! sequence's logits bit for bit alone, batched and chunked; greedy tokens
//! alone and batched, and against the CPU's.

use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;
use tessera_engine::Runner;
use tessera_model::backend::cuda::CudaBackend;
use tessera_model::backend::KvCacheDtype;
use tessera_model::loader::{load_model, ModelSource};
use tessera_model::runner::{CacheConfig, ModelRunner};

use crate::common::cuda::{assert_close, cuda};
use crate::common::tiny::{
    random_tensors, random_values, temp_dir, write_gguf, write_hf_dir, TINY,
};
use crate::common::{argmax, batch, cpu_runner_with, Blocks};
use crate::seed;

/// KV blocks of 16 tokens per sequence, and in the pool.
const BLOCKS: Blocks = Blocks { per_seq: 4 };
const NUM_BLOCKS: usize = 32;

/// Logits from bf16 activations through two layers against the CPU's f32:
/// a few bf16 roundings per layer (observed bounds belong here once a GPU
/// has run this).
const LOGITS_TOL: f64 = 3e-2;

fn cuda_runner(backend: CudaBackend, path: &Path) -> ModelRunner<CudaBackend> {
    let source = ModelSource::detect(path).expect("model source");
    let model = load_model(&backend, &source, Some(512)).expect("the model loads on the GPU");
    ModelRunner::new(
        backend,
        model,
        CacheConfig {
            block_size: 16,
            num_blocks: NUM_BLOCKS,
            max_model_len: 512,
            kv_dtype: KvCacheDtype::F16,
        },
    )
    .expect("runner")
}

/// Random models in `dir`: Llama with its own and with a tied LM head
/// (GGUF, f32), Qwen2 (safetensors, f32, QKV bias).
fn models(s: u64, dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let llama = dir.join("llama.gguf");
    write_gguf(
        &llama,
        TINY,
        "llama",
        GgmlDType::F32,
        &random_tensors(TINY, s, false),
        &[],
    );
    let tied = dir.join("llama-tied.gguf");
    let skip = ["output.weight"];
    write_gguf(
        &tied,
        TINY,
        "llama",
        GgmlDType::F32,
        &random_tensors(TINY, s + 1, false),
        &skip,
    );
    let qwen2 = write_hf_dir(
        &dir.join("qwen2"),
        TINY,
        "Qwen2ForCausalLM",
        candle_core::DType::F32,
        &random_tensors(TINY, s + 2, true),
    );
    vec![
        ("llama", llama),
        ("llama, tied head", tied),
        ("qwen2", qwen2),
    ]
}

/// `n` random prompts of the tiny vocabulary, of lengths 9, 30, 51, ...
fn prompts(s: u64, n: usize) -> Vec<Vec<u32>> {
    (0..n)
        .map(|i| {
            random_values(9 + 21 * i, s + 10 + i as u64, 1.0)
                .iter()
                .map(|v| ((v + 1.0) * 0.5 * (TINY.vocab - 1) as f32) as u32)
                .collect()
        })
        .collect()
}

#[test]
fn tiny_llama_and_qwen2_logits_match_the_cpu() {
    let test = "tiny_llama_and_qwen2_logits_match_the_cpu";
    if cuda(test).is_none() {
        return;
    }
    let s = seed(test);
    let dir = temp_dir("cuda-logits");
    for (name, path) in models(s, &dir) {
        let Some(backend) = cuda(test) else {
            return;
        };
        let mut gpu = cuda_runner(backend, &path);
        let mut cpu = cpu_runner_with(&path, NUM_BLOCKS, KvCacheDtype::F32);
        let prompts = prompts(s, 3);
        let prefill = batch(
            prompts
                .iter()
                .enumerate()
                .map(|(i, p)| (p.clone(), 0, BLOCKS.table(i), true))
                .collect(),
        );
        let (g, c) = (
            gpu.execute(&prefill).expect("gpu"),
            cpu.execute(&prefill).expect("cpu"),
        );
        for i in 0..prompts.len() {
            assert_close(
                &format!("{name}: prefill {i}"),
                g.row(i),
                c.row(i),
                LOGITS_TOL,
            );
        }
        let decode = batch(
            prompts
                .iter()
                .enumerate()
                .map(|(i, p)| (vec![argmax(c.row(i))], p.len(), BLOCKS.table(i), true))
                .collect(),
        );
        let (g, c) = (
            gpu.execute(&decode).expect("gpu"),
            cpu.execute(&decode).expect("cpu"),
        );
        for i in 0..prompts.len() {
            assert_close(
                &format!("{name}: decode {i}"),
                g.row(i),
                c.row(i),
                LOGITS_TOL,
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn logits_are_identical_alone_batched_and_chunked_on_the_gpu() {
    let test = "logits_are_identical_alone_batched_and_chunked_on_the_gpu";
    if cuda(test).is_none() {
        return;
    }
    let s = seed(test);
    let dir = temp_dir("cuda-invariance");
    for (name, path) in models(s, &dir) {
        let Some(backend) = cuda(test) else {
            return;
        };
        let mut runner = cuda_runner(backend, &path);
        let prompts = prompts(s, 3);
        let alone: Vec<Vec<f32>> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let out = runner.execute(&batch(vec![(p.clone(), 0, BLOCKS.table(i), true)]));
                out.expect("alone").row(0).to_vec()
            })
            .collect();
        let together = runner
            .execute(&batch(
                prompts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (p.clone(), 0, BLOCKS.table(i), true))
                    .collect(),
            ))
            .expect("batched");
        for (i, logits) in alone.iter().enumerate() {
            assert!(
                together.row(i) == logits.as_slice(),
                "{name}: sequence {i} differs batched"
            );
        }
        // The longest prompt in three chunks, each batched with decodes of
        // the others.
        let last = prompts.len() - 1;
        let p = &prompts[last];
        let cuts = [0, 5, 29, p.len()];
        let mut chunked = Vec::new();
        for (c, w) in cuts.windows(2).enumerate() {
            let mut chunks = vec![(
                p[w[0]..w[1]].to_vec(),
                w[0],
                BLOCKS.table(last),
                w[1] == p.len(),
            )];
            for (i, q) in prompts.iter().enumerate().take(last) {
                chunks.push((vec![100 + c as u32], q.len() + c, BLOCKS.table(i), true));
            }
            let out = runner.execute(&batch(chunks)).expect("chunked step");
            if w[1] == p.len() {
                chunked = out.row(0).to_vec();
            }
        }
        assert!(
            chunked == alone[last],
            "{name}: chunked prefill differs from one-shot prefill"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Greedy tokens of `prompts` (sequence `i` in blocks `BLOCKS.table(ids[i])`),
/// all in one batch per step.
fn greedy(
    runner: &mut impl Runner,
    prompts: &[Vec<u32>],
    ids: &[usize],
    steps: usize,
) -> Vec<Vec<u32>> {
    let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    for step in 0..steps {
        let chunks = prompts
            .iter()
            .zip(ids)
            .zip(&tokens)
            .map(|((p, &id), t)| match t.last() {
                None => (p.clone(), 0, BLOCKS.table(id), true),
                Some(&last) => (vec![last], p.len() + step - 1, BLOCKS.table(id), true),
            })
            .collect();
        let out = runner
            .execute(&batch(chunks))
            .map_err(|e| e.to_string())
            .expect("step");
        for (i, t) in tokens.iter_mut().enumerate() {
            t.push(argmax(out.row(i)));
        }
    }
    tokens
}

#[test]
fn greedy_tokens_are_the_same_alone_batched_and_on_the_cpu() {
    let test = "greedy_tokens_are_the_same_alone_batched_and_on_the_cpu";
    let Some(backend) = cuda(test) else {
        return;
    };
    let s = seed(test);
    let dir = temp_dir("cuda-greedy");
    let (_, path) = models(s, &dir).swap_remove(0);
    let mut gpu = cuda_runner(backend, &path);
    let prompts = prompts(s, 3);
    let ids: Vec<usize> = (0..prompts.len()).collect();
    let steps = 12;
    let together = greedy(&mut gpu, &prompts, &ids, steps);
    for (i, p) in prompts.iter().enumerate() {
        let alone = greedy(&mut gpu, std::slice::from_ref(p), &[i], steps);
        assert_eq!(
            alone[0], together[i],
            "sequence {i}: greedy tokens differ batched"
        );
    }
    // Against the CPU, fed the CPU's tokens: the same choice wherever the
    // CPU's is not a near-tie (top two further apart than 6% of the logits'
    // scale, twice the bound on their difference).
    let mut cpu = cpu_runner_with(&path, NUM_BLOCKS, KvCacheDtype::F32);
    let (mut checked, mut last) = (0, None);
    for step in 0..steps {
        let p = &prompts[0];
        let chunk = match last {
            None => (p.clone(), 0, BLOCKS.table(0), true),
            Some(t) => (vec![t], p.len() + step - 1, BLOCKS.table(0), true),
        };
        let c = cpu.execute(&batch(vec![chunk.clone()])).expect("cpu");
        let g = gpu.execute(&batch(vec![chunk])).expect("gpu");
        let (c, g) = (c.row(0), g.row(0));
        let best = argmax(c);
        let scale = c.iter().fold(0f32, |m, v| m.max(v.abs()));
        let second = c
            .iter()
            .enumerate()
            .filter(|&(i, _)| i as u32 != best)
            .fold(f32::NEG_INFINITY, |m, (_, &v)| m.max(v));
        if c[best as usize] - second > 0.06 * scale {
            assert_eq!(
                argmax(g),
                best,
                "step {step}: the GPU's greedy token differs"
            );
            checked += 1;
        }
        last = Some(best);
    }
    eprintln!("{test}: {checked} of {steps} CPU choices clear of a near-tie, all matched");
    let _ = std::fs::remove_dir_all(&dir);
}
