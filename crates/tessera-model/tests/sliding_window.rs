//! A sliding-window model through the whole engine: a tiny random Mistral
//! with a window of 8 tokens over blocks of 4 generates, greedily, the same
//! tokens as candle-transformers' Mistral over a sequence six windows long,
//! on a KV pool too small to hold that sequence (so the engine must release
//! the blocks behind the window as it goes), and again from the prefix cache,
//! whose hit then covers blocks already released.

mod common;

use std::sync::Arc;

use candle_core::DType;
use common::tiny::*;
use common::*;
use serde_json::json;
use tessera_engine::engine::{spawn, EngineConfig};
use tessera_engine::request::{Priority, Request, Usage};
use tessera_engine::sampling::SamplingParams;
use tessera_engine::TokenDecoder;
use tessera_model::backend::cpu::CpuBackend;
use tessera_model::backend::KvCacheDtype;
use tessera_model::loader::{load_model, ModelSource};
use tessera_model::runner::{CacheConfig, ModelRunner};

const WINDOW: usize = 8;
const BLOCK_SIZE: usize = 4;
const GENERATED: usize = 27;

/// Token ids as text: the test compares ids, not text.
struct IdDecoder;

impl TokenDecoder for IdDecoder {
    fn decode(&self, ids: &[u32], _skip_special_tokens: bool) -> Result<String, String> {
        Ok(ids.iter().map(|id| format!("<{id}>")).collect())
    }
}

fn write_mistral(dir: &std::path::Path) {
    let extra =
        json!({"model_type": "mistral", "sliding_window": WINDOW, "head_dim": TINY.head_dim()});
    write_hf_dir_with(
        dir,
        TINY,
        "MistralForCausalLM",
        DType::F32,
        &random_tensors(TINY, 23, false),
        &extra,
    );
}

/// candle's greedy continuation, each step recomputed from the whole
/// sequence: its KV-cached decode applies no window, its full-sequence mask
/// does (keeping `j + w >= i`, so it runs with a window one smaller than
/// Hugging Face's `i - j < w`).
fn candle_greedy(dir: &std::path::Path, prompt: &[u32], n: usize) -> Vec<u32> {
    use candle_transformers::models::mistral::{Config, Model};
    let text = std::fs::read_to_string(dir.join("config.json")).expect("config");
    let mut config: Config = serde_json::from_str(&text).expect("mistral config");
    config.sliding_window = Some(WINDOW - 1);
    let vb = weights(dir);
    let mut model = Model::new(&config, vb).expect("candle mistral");
    let mut tokens = prompt.to_vec();
    for _ in 0..n {
        model.clear_kv_cache();
        let input = input(tokens.as_slice());
        let logits: Vec<f32> = model
            .forward(&input, 0)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .expect("candle forward");
        tokens.push(argmax(&logits));
    }
    tokens.split_off(prompt.len())
}

/// Runs `prompt` through an engine over a pool of `num_blocks` blocks,
/// `times` times one after the other; returns each run's tokens and usage,
/// and the engine's preemptions.
fn engine_greedy(
    dir: &std::path::Path,
    num_blocks: usize,
    prompt: &[u32],
    times: usize,
) -> (Vec<(Vec<u32>, Usage)>, u64) {
    let backend = CpuBackend::new();
    let source = ModelSource::detect(dir).expect("model source");
    let model = load_model(&backend, &source, None).expect("model loads");
    let runner = ModelRunner::new(
        backend,
        model,
        CacheConfig {
            block_size: BLOCK_SIZE,
            num_blocks,
            max_model_len: 512,
            kv_dtype: KvCacheDtype::F32,
        },
    )
    .expect("runner");
    assert_eq!(
        tessera_engine::Runner::sliding_window(&runner),
        Some(WINDOW)
    );
    let engine = spawn(
        runner,
        Arc::new(IdDecoder),
        EngineConfig {
            // Prompts run in chunks of 8, so the window spans chunks too.
            max_num_batched_tokens: 8,
            vocab_size: TINY.vocab,
            ..EngineConfig::default()
        },
    )
    .expect("engine starts");
    let mut runs = Vec::new();
    for _ in 0..times {
        let request = Request {
            prompt_token_ids: prompt.to_vec(),
            params: SamplingParams {
                temperature: 0.0,
                max_tokens: GENERATED,
                ignore_eos: true,
                ..SamplingParams::default()
            },
            priority: Priority::Interactive,
        };
        let mut stream = engine.submit(request).expect("accepted");
        let mut tokens = Vec::new();
        let usage = loop {
            let out = stream.blocking_next().expect("the stream ends with usage");
            assert!(out.error.is_none(), "engine error: {:?}", out.error);
            tokens.extend(&out.token_ids);
            if let Some(usage) = out.usage {
                break usage;
            }
        };
        runs.push((tokens, usage));
    }
    (runs, engine.stats().preemptions)
}

#[test]
fn engine_with_a_sliding_window_matches_candle_mistral_past_the_pool() {
    let dir = temp_dir("sliding-window-engine");
    write_mistral(&dir);
    let prompt = REFERENCE_PROMPT;
    let expected = candle_greedy(&dir, &prompt, GENERATED);
    let total = prompt.len() + GENERATED;
    assert_eq!(total, 6 * WINDOW);

    // 7 blocks of 4 (one of them the null block) hold 24 tokens, half the
    // sequence: it runs only because blocks behind the window go back.
    let (runs, preemptions) = engine_greedy(&dir, 7, &prompt, 1);
    assert!(7 * BLOCK_SIZE < total);
    assert_eq!(runs[0].0, expected, "tokens differ from candle's");
    assert_eq!(preemptions, 0);

    // With room to keep the first run's blocks cached, the second run
    // reuses its prompt: 5 full blocks, of which the first 3 lie before the
    // window of token 20 and are not even taken.
    let (runs, _) = engine_greedy(&dir, 64, &prompt, 2);
    assert_eq!(runs[0].0, expected);
    assert_eq!(runs[0].1.cached_prompt_tokens, 0);
    assert_eq!(runs[1].0, expected, "a prefix hit changed the tokens");
    assert_eq!(runs[1].1.cached_prompt_tokens, 20);
    let _ = std::fs::remove_dir_all(&dir);
}
