//! The default model's next-token logits against two independent references:
//! llama.cpp's (fixtures recorded from llama.cpp on the same GGUF file) and
//! candle-transformers' `quantized_llama` run in-process on the same file.
//!
//! Why the tolerances are what they are: every matmul re-quantizes its input
//! activations to 8 bits per block of 32, so a last-bit difference anywhere
//! upstream can flip an int8 rounding and move the logits by a visible amount.
//! Measured here: changing RMSNorm from `x * (1/rms) * w` to `x / rms * w` (one
//! rounding) moved the top logits of the first prompt by up to 0.2. llama.cpp and
//! candle differ from tessera in many such orders (attention sums, softmax, rotary
//! angles), so logits agree to a few tenths, not bit for bit. Observed on the four
//! fixture prompts (2026-11-25, FMA attention kernel): vs llama.cpp, top-20 max
//! |diff| 0.27-0.50, mean 0.09-0.26; vs candle, whole-vocabulary max 0-0.88, mean
//! 0-0.26. The bounds
//! below leave about 2x headroom; a wrong rotary layout, norm or head mapping moves
//! logits by several units and fails them.

mod common;

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use common::*;
use tessera_engine::Runner;
use tessera_model::backend::KvCacheDtype;

struct Case {
    prompt_ids: Vec<u32>,
    top20: Vec<(u32, f32)>,
    greedy24: Vec<u32>,
}

fn cases() -> Vec<Case> {
    fixture_lines("smollm2-logits.jsonl")
        .into_iter()
        .map(|v| Case {
            prompt_ids: serde_json::from_value(v["prompt_ids"].clone()).expect("prompt_ids"),
            top20: v["top20"]
                .as_array()
                .expect("top20")
                .iter()
                .map(|p| {
                    (
                        p[0].as_u64().expect("id") as u32,
                        p[1].as_f64().expect("logit") as f32,
                    )
                })
                .collect(),
            greedy24: serde_json::from_value(v["greedy24"].clone()).expect("greedy24"),
        })
        .collect()
}

fn prompt_logits(runner: &mut impl Runner, ids: &[u32]) -> Vec<f32> {
    let table: Vec<u32> = (0..ids.len().div_ceil(16) as u32 + 1).collect();
    let out = runner
        .execute(&batch(vec![(ids.to_vec(), 0, table, true)]))
        .expect("forward");
    out.row(0).to_vec()
}

/// Our logits against llama.cpp's top 20 (llama.cpp ran with its default
/// f16 KV cache), with either KV cache type.
#[test]
fn logits_agree_with_llama_cpp() {
    for dtype in [KvCacheDtype::F32, KvCacheDtype::F16] {
        let mut runner = cpu_runner_with(&default_model(), 64, dtype);
        for (n, case) in cases().iter().enumerate() {
            let logits = prompt_logits(&mut runner, &case.prompt_ids);
            let mut worst = 0f32;
            for &(id, reference) in &case.top20 {
                worst = worst.max((logits[id as usize] - reference).abs());
            }
            let mean: f32 = case
                .top20
                .iter()
                .map(|&(id, r)| (logits[id as usize] - r).abs())
                .sum::<f32>()
                / 20.0;
            eprintln!("{dtype} KV, case {n}: |tessera - llama.cpp| over top-20: max {worst:.4} mean {mean:.4}; top-1 ours {} theirs {}", argmax(&logits), case.top20[0].0);
            assert!(worst < 1.0, "{dtype} KV, case {n}: max diff {worst}");
            assert!(mean < 0.5, "{dtype} KV, case {n}: mean diff {mean}");
            // Our top token is llama.cpp's, or within a near-tie of it.
            let ours_top = argmax(&logits) as usize;
            assert!(
                logits[ours_top] - logits[case.top20[0].0 as usize] < 0.3,
                "{dtype} KV, case {n}: llama.cpp's top token {} is far below ours {ours_top}",
                case.top20[0].0
            );
        }
    }
}

#[test]
fn logits_agree_with_candle_quantized_llama() {
    let path = default_model();
    let mut file = std::fs::File::open(&path).expect("open");
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).expect("gguf");
    let mut reference =
        ModelWeights::from_gguf(content, &mut file, &Device::Cpu).expect("candle model");
    // candle keeps K and V in f32.
    let mut runner = cpu_runner_with(&path, 64, KvCacheDtype::F32);
    let candle_logits = |model: &mut ModelWeights, ids: &[u32]| -> Vec<f32> {
        model.clear_kv_cache();
        let input = Tensor::new(ids, &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .expect("input");
        model
            .forward(&input, 0)
            .and_then(|t| t.squeeze(0))
            .and_then(|t| t.to_vec1())
            .expect("candle forward")
    };
    // Our quantized matmuls sum their blocks in another order than candle's
    // (up to rounding per matmul: qmatmul's tests), and a last-bit difference
    // can flip the 8-bit rounding of an activation in the next layer, so the
    // logits agree within the bounds below, not to the bit. The first case
    // is also run on its first two tokens alone.
    let first = &cases()[0].prompt_ids[..2];
    let (ours, theirs) = (
        prompt_logits(&mut runner, first),
        candle_logits(&mut reference, first),
    );
    let diff = max_abs_diff(&ours, &theirs);
    eprintln!("two tokens: |tessera - candle| max {diff:.4}");
    assert!(diff < 1.5, "two tokens: max diff {diff}");
    assert_eq!(argmax(&ours), argmax(&theirs), "two tokens: top tokens");
    for (n, case) in cases().iter().enumerate() {
        let ours = prompt_logits(&mut runner, &case.prompt_ids);
        let theirs = candle_logits(&mut reference, &case.prompt_ids);
        let diff = max_abs_diff(&ours, &theirs);
        let mean: f32 = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / ours.len() as f32;
        eprintln!("case {n}: |tessera - candle| over the vocabulary: max {diff:.4} mean {mean:.4}; top-1 {} vs {}", argmax(&ours), argmax(&theirs));
        assert!(diff < 1.5, "case {n}: max diff {diff}");
        // 0.4 held while our kernels followed candle's float order; case 1 now
        // sits at 0.46 from rounding alone (its distance to llama.cpp is 0.19).
        assert!(mean < 0.6, "case {n}: mean diff {mean}");
        let top = argmax(&theirs) as usize;
        assert!(
            ours[argmax(&ours) as usize] - ours[top] < 0.3,
            "case {n}: top tokens part"
        );
    }
}

#[test]
fn greedy_continuations_follow_llama_cpp() {
    let mut runner = cpu_runner(&default_model(), 64);
    for (n, case) in cases().iter().enumerate() {
        let table: Vec<u32> = (0..8).collect();
        let mut logits = prompt_logits(&mut runner, &case.prompt_ids);
        let mut worst_margin = 0f32;
        let mut agree = 0;
        // Teacher forcing: feed llama.cpp's greedy tokens one decode step at a time and
        // check each was our choice too, or within a near-tie of it.
        for (step, &theirs) in case.greedy24.iter().enumerate() {
            let max = logits[argmax(&logits) as usize];
            let margin = max - logits[theirs as usize];
            worst_margin = worst_margin.max(margin);
            agree += usize::from(argmax(&logits) == theirs);
            let pos = case.prompt_ids.len() + step;
            let out = runner
                .execute(&batch(vec![(vec![theirs], pos, table.clone(), true)]))
                .expect("decode");
            logits = out.row(0).to_vec();
        }
        eprintln!("case {n}: our argmax is llama.cpp's greedy token at {agree} of {} steps; worst margin {worst_margin:.4}", case.greedy24.len());
        // Observed: 21-23 of 24 steps, worst margin 0.29.
        assert!(
            worst_margin < 0.6,
            "case {n}: llama.cpp's token {worst_margin} below our best"
        );
        assert!(
            agree >= 20,
            "case {n}: only {agree} of 24 greedy steps agree"
        );
    }
}
