//! The engine over the real default model: requests batched together produce
//! exactly what each produces alone, greedy and seeded. (Agreement of the
//! model's logits with llama.cpp is checked in gguf_logits.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tessera::engine_setup::{Compute, EngineOptions, KvCacheSize};
use tessera_engine::engine::EngineHandle;
use tessera_engine::request::{Priority, Request};
use tessera_engine::sampling::SamplingParams;
use tessera_model::backend::KvCacheDtype;
use tessera_model::tokenizer::Tokenizer;

fn default_model() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-model",
        p.display()
    );
    p
}

fn start_engine(num_blocks: usize, budget: usize) -> (EngineHandle, Arc<Tokenizer>) {
    let compute = Compute::cpu();
    let options = EngineOptions {
        max_model_len: Some(1024),
        kv_cache: KvCacheSize::Blocks(num_blocks),
        kv_cache_dtype: KvCacheDtype::default(),
        max_num_batched_tokens: budget,
        max_num_seqs: 128,
        batch_max_running: None,
        batch_max_prefill_tokens: None,
        batch_with_interactive_prefill: false,
        no_prefix_caching: false,
        max_waiting_requests: 4096,
    };
    let path = default_model();
    let plan = compute.plan(&path, &options, u64::MAX).expect("plans");
    assert_eq!(plan.num_blocks(), num_blocks);
    let loaded = compute.load(&path, &options, &plan).expect("loads");
    (loaded.engine, loaded.tokenizer)
}

fn generate(engine: &EngineHandle, prompt: Vec<u32>, params: SamplingParams) -> (Vec<u32>, String) {
    let mut stream = engine
        .submit(Request {
            prompt_token_ids: prompt,
            params,
            priority: Priority::Interactive,
        })
        .expect("accepted");
    let (mut tokens, mut text) = (Vec::new(), String::new());
    while let Some(out) = stream.blocking_next() {
        assert!(out.error.is_none(), "{:?}", out.error);
        tokens.extend(out.token_ids);
        text.push_str(&out.text);
        if out.usage.is_some() {
            break;
        }
    }
    (tokens, text)
}

#[test]
fn batched_outputs_equal_solo_outputs_on_the_default_model() {
    let (engine, tokenizer) = start_engine(512, 64);
    let prompts = [
        "The capital of France is",
        "def fibonacci(n):",
        "Once upon a time, in a land far away, there lived",
        "List three colors:",
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
        "Water boils at",
    ];
    let jobs: Vec<(Vec<u32>, SamplingParams)> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let ids = tokenizer.encode(p, true).expect("encodes");
            let params = SamplingParams {
                temperature: if i % 2 == 0 { 0.0 } else { 0.8 },
                seed: Some(i as u64),
                max_tokens: 10,
                ignore_eos: true,
                ..SamplingParams::default()
            };
            (ids, params)
        })
        .collect();
    let alone: Vec<_> = jobs
        .iter()
        .map(|(p, s)| generate(&engine, p.clone(), s.clone()))
        .collect();
    // A fresh engine, so no prefix cache from the solo runs; a small budget makes
    // prompts arrive in chunks next to other sequences' decodes.
    let (batched_engine, _) = start_engine(512, 8);
    let handles: Vec<_> = jobs
        .iter()
        .cloned()
        .map(|(p, s)| {
            let e = batched_engine.clone();
            std::thread::spawn(move || generate(&e, p, s))
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let together = h.join().expect("thread");
        assert_eq!(together, alone[i], "prompt {:?}", prompts[i]);
    }
    // A sanity check that the greedy text is the model's, not noise.
    assert!(alone[0].1.contains("Paris"), "{:?}", alone[0].1);
}
