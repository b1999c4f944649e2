//! Engine throughput on the default model: many requests through continuous
//! batching, next to one request alone on the same engine settings.
//!
//! `cargo bench --bench throughput -- [requests=64] [prompt=128] [output=128]`
//! (`TESSERA_KV_CACHE_DTYPE=f16` for an f16 KV cache)
//! Reports output tokens/s, p50/p99 time per output token (per request, after
//! its first token), and the scheduler's share of step time (time outside the
//! model forward).
//!
//! `cargo test --all-targets` also runs this file (without `--bench`): then it
//! does a smoke run of 2 requests of 8 tokens so the code stays working.

use std::path::Path;
use std::time::{Duration, Instant};

use tessera::engine_setup::{Compute, EngineOptions, KvCacheSize};
use tessera_engine::engine::EngineHandle;
use tessera_engine::request::{Priority, Request};
use tessera_engine::sampling::SamplingParams;
use tessera_model::backend::KvCacheDtype;

fn main() -> anyhow::Result<()> {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| a.parse().ok())
        .collect();
    let defaults = if benchmarking {
        [64, 128, 128]
    } else {
        [2, 16, 8]
    };
    let requests = args.first().copied().unwrap_or(defaults[0]);
    let prompt_len = args.get(1).copied().unwrap_or(defaults[1]);
    let output_len = args.get(2).copied().unwrap_or(defaults[2]);
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let (engine, vocab) = start(&model, requests)?;
    println!(
        "model {} | {requests} requests, prompt {prompt_len}, output {output_len}, ignore_eos, greedy | threads {} | KV {}",
        model.display(),
        rayon::current_num_threads(),
        kv_dtype()?
    );

    let single = run(&engine, 1, prompt_len, output_len, vocab, 1)?;
    let single_decode = single.output_tokens as f64 / single.wall.as_secs_f64();
    println!(
        "single stream: {:.1} output tok/s, TPOT p50 {:.1} ms",
        single_decode,
        single.tpot_p50 * 1e3
    );

    let before = engine.stats();
    let batch = run(&engine, requests, prompt_len, output_len, vocab, 1000)?;
    let after = engine.stats();
    anyhow::ensure!(
        batch.output_tokens == requests * output_len,
        "expected {} output tokens, got {}",
        requests * output_len,
        batch.output_tokens
    );
    let steps = after.steps - before.steps;
    let step_ns = after.step_nanos - before.step_nanos;
    let forward_ns = after.forward_nanos - before.forward_nanos;
    let overhead = (step_ns - forward_ns) as f64 / step_ns.max(1) as f64;
    let throughput = batch.output_tokens as f64 / batch.wall.as_secs_f64();
    println!(
        "batched: {} output tokens in {:.2}s = {:.1} output tok/s ({:.1}x single stream)",
        batch.output_tokens,
        batch.wall.as_secs_f64(),
        throughput,
        throughput / single_decode
    );
    println!(
        "TPOT p50 {:.1} ms, p99 {:.1} ms | {steps} steps, scheduler overhead {:.3} ms/step = {:.2}% of step time | preemptions {}",
        batch.tpot_p50 * 1e3,
        batch.tpot_p99 * 1e3,
        (step_ns - forward_ns) as f64 / steps.max(1) as f64 / 1e6,
        overhead * 100.0,
        after.preemptions - before.preemptions
    );
    Ok(())
}

/// `TESSERA_KV_CACHE_DTYPE` (f32 or f16), as `tessera serve` reads it.
fn kv_dtype() -> anyhow::Result<KvCacheDtype> {
    match std::env::var("TESSERA_KV_CACHE_DTYPE") {
        Ok(v) => v.parse().map_err(anyhow::Error::msg),
        Err(_) => Ok(KvCacheDtype::default()),
    }
}

fn start(model: &Path, max_seqs: usize) -> anyhow::Result<(EngineHandle, usize)> {
    let compute = Compute::cpu();
    let options = EngineOptions {
        max_model_len: Some(2048),
        kv_cache: KvCacheSize::Blocks(4096),
        kv_cache_dtype: kv_dtype()?,
        max_num_batched_tokens: 512,
        max_num_seqs: max_seqs,
        batch_max_running: None,
        batch_max_prefill_tokens: None,
        batch_with_interactive_prefill: false,
        no_prefix_caching: false,
        max_waiting_requests: 4096,
    };
    let plan = compute.plan(model, &options, u64::MAX)?;
    let loaded = compute.load(model, &options, &plan)?;
    let vocab = loaded.tokenizer.vocab_size();
    Ok((loaded.engine, vocab))
}

struct RunResult {
    wall: Duration,
    output_tokens: usize,
    tpot_p50: f64,
    tpot_p99: f64,
}

/// Submits `n` requests at once and waits for all; one thread per stream.
fn run(
    engine: &EngineHandle,
    n: usize,
    prompt_len: usize,
    output_len: usize,
    vocab: usize,
    salt: usize,
) -> anyhow::Result<RunResult> {
    let start = Instant::now();
    let mut threads = Vec::new();
    for i in 0..n {
        // Distinct prompts, so the prefix cache does not help.
        let prompt: Vec<u32> = (0..prompt_len)
            .map(|j| ((i + salt) * 7919 + j * 104_729) as u32 % (vocab as u32 - 1000) + 500)
            .collect();
        let mut stream = engine.submit(Request {
            prompt_token_ids: prompt,
            params: SamplingParams {
                temperature: 0.0,
                max_tokens: output_len,
                ignore_eos: true,
                ..SamplingParams::default()
            },
            priority: Priority::Interactive,
        })?;
        threads.push(std::thread::spawn(move || {
            let mut times = Vec::new();
            while let Some(out) = stream.blocking_next() {
                for _ in &out.token_ids {
                    times.push(Instant::now());
                }
                if out.usage.is_some() || out.error.is_some() {
                    break;
                }
            }
            times
        }));
    }
    let mut tpots = Vec::new();
    let mut output_tokens = 0;
    for t in threads {
        let times = t
            .join()
            .map_err(|_| anyhow::anyhow!("stream thread panicked"))?;
        output_tokens += times.len();
        if times.len() > 1 {
            let span = times[times.len() - 1] - times[0];
            tpots.push(span.as_secs_f64() / (times.len() - 1) as f64);
        }
    }
    let wall = start.elapsed();
    tpots.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        tpots
            .get(((tpots.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok(RunResult {
        wall,
        output_tokens,
        tpot_p50: pct(0.5),
        tpot_p99: pct(0.99),
    })
}
