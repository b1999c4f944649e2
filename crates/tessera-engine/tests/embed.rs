//! An embedding engine over a fake encoder: every prompt runs whole in one
//! step, prompts of different clients share steps in priority order, each
//! request ends with its vector and leaves no block behind.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use tessera_engine::engine::{spawn, EngineConfig, EngineHandle, EngineTask, SubmitError};
use tessera_engine::request::{FinishReason, Priority, Request};
use tessera_engine::sampling::SamplingParams;
use tessera_engine::{Batch, Logits, Runner, TokenDecoder};

const VOCAB: usize = 1000;
const MAX_LEN: usize = 32;
const BLOCK: usize = 4;
const BLOCKS: usize = 64;

/// Rows `[sum of ids, count, first position]`: what a sequence was run with.
struct FakeEncoder {
    batches: Arc<Mutex<Vec<Batch>>>,
    /// While set, each step waits for a message first.
    gated: Arc<AtomicBool>,
    gate: Receiver<()>,
}

impl Runner for FakeEncoder {
    type Error = std::io::Error;

    fn block_size(&self) -> usize {
        BLOCK
    }
    fn num_blocks(&self) -> usize {
        BLOCKS
    }
    fn max_model_len(&self) -> usize {
        MAX_LEN
    }
    fn execute(&mut self, batch: &Batch) -> Result<Logits, std::io::Error> {
        if self.gated.load(Ordering::SeqCst) {
            let _ = self.gate.recv();
        }
        self.batches.lock().unwrap().push(batch.clone());
        let mut data = Vec::new();
        for c in batch.chunks.iter().filter(|c| c.wants_logits) {
            data.push(c.token_ids.iter().sum::<u32>() as f32);
            data.push(c.token_ids.len() as f32);
            data.push(c.start_position as f32);
        }
        Ok(Logits {
            vocab_size: 3,
            data,
        })
    }
}

/// An embedding engine never decodes: a decoder that always fails must not
/// fail any request.
struct NoText;

impl TokenDecoder for NoText {
    fn decode(&self, _ids: &[u32], _skip: bool) -> Result<String, String> {
        Err("an embedding engine decoded tokens".into())
    }
}

struct Setup {
    engine: EngineHandle,
    batches: Arc<Mutex<Vec<Batch>>>,
    gated: Arc<AtomicBool>,
    gate: Sender<()>,
}

fn setup(budget: usize) -> Setup {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let gated = Arc::new(AtomicBool::new(false));
    let (gate, rx) = channel();
    let runner = FakeEncoder {
        batches: batches.clone(),
        gated: gated.clone(),
        gate: rx,
    };
    let engine = spawn(
        runner,
        Arc::new(NoText),
        EngineConfig {
            max_num_batched_tokens: budget,
            vocab_size: VOCAB,
            task: EngineTask::Embed,
            ..EngineConfig::default()
        },
    )
    .expect("engine starts");
    Setup {
        engine,
        batches,
        gated,
        gate,
    }
}

fn request(prompt: Vec<u32>, priority: Priority) -> Request {
    Request {
        prompt_token_ids: prompt,
        params: SamplingParams::default(),
        priority,
    }
}

/// The request's one output: its vector and prompt tokens.
fn embedding(engine: &EngineHandle, prompt: Vec<u32>) -> (Vec<f32>, usize) {
    let mut stream = engine
        .submit(request(prompt, Priority::Interactive))
        .expect("accepted");
    let out = stream.blocking_next().expect("one output");
    assert_eq!(out.error, None);
    assert_eq!(out.finish_reason, Some(FinishReason::Stop));
    assert!(stream.blocking_next().is_none(), "one output only");
    (
        out.embedding.expect("an embedding"),
        out.usage.expect("usage").prompt_tokens,
    )
}

#[test]
fn a_prompt_runs_whole_even_over_the_step_budget() {
    let s = setup(4);
    let prompt: Vec<u32> = (1..=20).collect();
    let (vector, tokens) = embedding(&s.engine, prompt);
    assert_eq!(vector, vec![210.0, 20.0, 0.0]);
    assert_eq!(tokens, 20);
    assert_eq!(s.batches.lock().unwrap().len(), 1);
    let stats = s.engine.stats();
    assert_eq!(stats.free_blocks, stats.num_blocks, "no KV kept");
    assert_eq!(stats.generated_tokens, 0);
}

#[test]
fn clients_share_steps_in_priority_order() {
    let s = setup(64);
    s.gated.store(true, Ordering::SeqCst);
    let first = s
        .engine
        .submit(request(vec![1, 2], Priority::Interactive))
        .expect("accepted");
    // The engine holds `first` in a step until the gate opens; these queue.
    while s.engine.num_waiting() > 0 {
        std::thread::yield_now();
    }
    let batch_one = s
        .engine
        .submit(request(vec![7; 3], Priority::Batch))
        .unwrap();
    let interactive = s
        .engine
        .submit(request(vec![5; 4], Priority::Interactive))
        .unwrap();
    let another = s
        .engine
        .submit(request(vec![9; 5], Priority::Interactive))
        .unwrap();
    s.gated.store(false, Ordering::SeqCst);
    s.gate.send(()).unwrap();
    for (mut stream, expected) in [
        (first, vec![3.0, 2.0, 0.0]),
        (batch_one, vec![21.0, 3.0, 0.0]),
        (interactive, vec![20.0, 4.0, 0.0]),
        (another, vec![45.0, 5.0, 0.0]),
    ] {
        let out = stream.blocking_next().expect("an output");
        assert_eq!(out.embedding, Some(expected));
    }
    let batches = s.batches.lock().unwrap();
    assert_eq!(
        batches.len(),
        2,
        "the three waiting prompts ran in one step"
    );
    let lens: Vec<usize> = batches[1]
        .chunks
        .iter()
        .map(|c| c.token_ids.len())
        .collect();
    assert_eq!(
        lens,
        vec![4, 5, 3],
        "interactive before batch, then arrival"
    );
}

#[test]
fn a_prompt_over_the_limit_is_refused_and_one_at_it_runs() {
    let s = setup(64);
    let too_long = s
        .engine
        .submit(request(vec![1; MAX_LEN + 1], Priority::Interactive));
    assert!(matches!(too_long, Err(SubmitError::Invalid(m)) if m.contains("at most 32")));
    let (vector, _) = embedding(&s.engine, vec![1; MAX_LEN]);
    assert_eq!(vector[1], MAX_LEN as f32);
}
