//! A runner and a decoder that break their contracts on purpose: the engine
//! must fail the requests they touch with a clear error, free their blocks,
//! count them, and keep serving everything else.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ByteDecoder, FakeError, HashModel, EOS, VOCAB};
use tessera_engine::engine::{spawn, EngineConfig, EngineHandle, OutputStream};
use tessera_engine::request::{FinishReason, Priority, Request, RequestOutput};
use tessera_engine::sampling::SamplingParams;
use tessera_engine::{Batch, Logits, Runner, TokenDecoder};

/// A prompt starting with this token gets NaN logits at every step.
const POISON: u32 = 61;
/// The decoder cannot decode this token.
const UNDECODABLE: u32 = 60;

/// What the next forward does wrong (once).
#[derive(Clone, Copy, Debug)]
enum Fault {
    FewerRows,
    MoreRows,
    PartialRow,
    BackendError,
}

/// [`HashModel`] with faults injected.
struct FaultyModel {
    inner: HashModel,
    next: Arc<Mutex<Option<Fault>>>,
    /// First blocks of sequences whose prompt starts with [`POISON`].
    poisoned: HashSet<u32>,
}

impl Runner for FaultyModel {
    type Error = FakeError;

    fn block_size(&self) -> usize {
        self.inner.block_size()
    }

    fn num_blocks(&self) -> usize {
        self.inner.num_blocks()
    }

    fn max_model_len(&self) -> usize {
        self.inner.max_model_len()
    }

    fn execute(&mut self, batch: &Batch) -> Result<Logits, FakeError> {
        let fault = self.next.lock().expect("fault lock").take();
        if let Some(Fault::BackendError) = fault {
            return Err(FakeError::new("the device fell off the bus"));
        }
        let mut logits = self.inner.execute(batch)?;
        let mut row = 0;
        for chunk in &batch.chunks {
            if chunk.start_position == 0 {
                if chunk.token_ids.first() == Some(&POISON) {
                    self.poisoned.insert(chunk.block_table[0]);
                } else {
                    self.poisoned.remove(&chunk.block_table[0]);
                }
            }
            if chunk.wants_logits {
                if self.poisoned.contains(&chunk.block_table[0]) {
                    logits.data[row * VOCAB + 5] = f32::NAN;
                }
                row += 1;
            }
        }
        match fault {
            Some(Fault::FewerRows) => logits.data.truncate(logits.data.len() - VOCAB),
            Some(Fault::MoreRows) => logits.data.extend(vec![0.0; VOCAB]),
            Some(Fault::PartialRow) => logits.data.push(0.0),
            _ => {}
        }
        Ok(logits)
    }
}

/// [`ByteDecoder`], but [`UNDECODABLE`] is an error.
struct FaultyDecoder;

impl TokenDecoder for FaultyDecoder {
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, String> {
        if ids.contains(&UNDECODABLE) {
            return Err(format!("token {UNDECODABLE} has no text"));
        }
        ByteDecoder.decode(ids, skip_special_tokens)
    }
}

fn engine(next: Arc<Mutex<Option<Fault>>>) -> EngineHandle {
    let model = FaultyModel {
        inner: HashModel::new(64, 4, 512),
        next,
        poisoned: HashSet::new(),
    };
    spawn(
        model,
        Arc::new(FaultyDecoder),
        EngineConfig {
            eos_token_ids: vec![EOS],
            vocab_size: VOCAB,
            ..EngineConfig::default()
        },
    )
    .expect("engine starts")
}

/// Without `logit_bias`, [`UNDECODABLE`] is banned: greedy decoding of the
/// hash model would otherwise reach it on some prompts.
fn request(first: u32, n: usize, logit_bias: Vec<(u32, f32)>) -> Request {
    let logit_bias = if logit_bias.is_empty() {
        vec![(UNDECODABLE, -100.0)]
    } else {
        logit_bias
    };
    Request {
        prompt_token_ids: std::iter::once(first)
            .chain((1..9u32).map(|i| (i * 7 + first) % 50))
            .collect(),
        params: SamplingParams {
            n,
            temperature: 0.0,
            max_tokens: 6,
            ignore_eos: true,
            logit_bias,
            ..SamplingParams::default()
        },
        priority: Priority::Interactive,
    }
}

/// Every output until the stream ends (after usage or an error); a request
/// left hanging fails the test instead of blocking it.
fn drain(mut stream: OutputStream) -> Vec<RequestOutput> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        while let Some(out) = stream.blocking_next() {
            let end = out.usage.is_some() || out.error.is_some();
            all.push(out);
            if end {
                break;
            }
        }
        let _ = tx.send(all);
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the request ends within 10 s")
}

fn error_of(outputs: &[RequestOutput]) -> &str {
    let last = outputs.last().expect("an output");
    assert_eq!(last.finish_reason, Some(FinishReason::Abort), "{outputs:?}");
    last.error.as_deref().expect("ends with an error")
}

fn completes(outputs: &[RequestOutput]) {
    let last = outputs.last().expect("an output");
    assert!(last.error.is_none() && last.usage.is_some(), "{outputs:?}");
    let tokens: usize = outputs.iter().map(|o| o.token_ids.len()).sum();
    assert_eq!(Some(tokens), last.usage.map(|u| u.completion_tokens));
    assert_eq!(tokens % 6, 0, "every sample ran to max_tokens: {outputs:?}");
}

/// Waits until every block is back and nothing runs, with `failed` requests
/// counted.
fn settled(engine: &EngineHandle, failed: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = engine.stats();
        if s.free_blocks == s.num_blocks && s.running_requests == 0 && s.failed_requests == failed {
            return;
        }
        assert!(Instant::now() < deadline, "not settled: {s:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_broken_forward_fails_its_batch_and_the_engine_goes_on() {
    for (fault, says) in [
        (Fault::FewerRows, "rows were asked for"),
        (Fault::MoreRows, "rows were asked for"),
        (Fault::PartialRow, "remainder 1"),
        (
            Fault::BackendError,
            "model forward failed: the device fell off the bus",
        ),
    ] {
        let next = Arc::new(Mutex::new(None));
        let engine = engine(next.clone());
        // Both requests in the first forward: the fault hits both, n = 2
        // included (its samples are not forked yet, one failure ends it).
        *next.lock().expect("fault lock") = Some(fault);
        let a = engine.submit(request(1, 1, vec![])).expect("accepted");
        let b = engine.submit(request(2, 2, vec![])).expect("accepted");
        let (a, b) = (drain(a), drain(b));
        let failed = [&a, &b]
            .iter()
            .filter(|o| o.last().is_some_and(|o| o.error.is_some()))
            .count();
        assert!(failed >= 1, "{fault:?}: {a:?} {b:?}");
        for outputs in [&a, &b] {
            if outputs.last().is_some_and(|o| o.error.is_some()) {
                let e = error_of(outputs);
                assert!(e.contains(says), "{fault:?}: {e}");
            } else {
                completes(outputs);
            }
        }
        settled(&engine, failed as u64);
        // Still serving, with the pool whole.
        completes(&drain(
            engine.submit(request(3, 2, vec![])).expect("accepted"),
        ));
        settled(&engine, failed as u64);
    }
}

#[test]
fn nan_logits_fail_only_their_request() {
    let engine = engine(Arc::new(Mutex::new(None)));
    let poisoned = engine.submit(request(POISON, 1, vec![])).expect("accepted");
    let healthy = engine.submit(request(4, 3, vec![])).expect("accepted");
    let e = error_of(&drain(poisoned)).to_string();
    assert!(e.contains("non-finite logit (NaN) for token 5"), "{e}");
    completes(&drain(healthy));
    settled(&engine, 1);
}

#[test]
fn a_detokenizer_error_fails_only_its_request() {
    let engine = engine(Arc::new(Mutex::new(None)));
    let bad = engine
        .submit(request(7, 2, vec![(UNDECODABLE, 100.0)]))
        .expect("accepted");
    let good = engine
        .submit(request(8, 1, vec![(UNDECODABLE, -100.0)]))
        .expect("accepted");
    let e = error_of(&drain(bad)).to_string();
    assert!(
        e.contains("detokenization failed: token 60 has no text"),
        "{e}"
    );
    completes(&drain(good));
    settled(&engine, 1);
}
