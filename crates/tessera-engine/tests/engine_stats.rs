//! What the engine reports for metrics: prefix-cache lookups, request gauges,
//! step time and per-request timings.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ByteDecoder, HashModel, EOS, VOCAB};
use tessera_engine::engine::{spawn, EngineConfig, EngineHandle, OutputStream};
use tessera_engine::request::{Priority, Request, RequestOutput};
use tessera_engine::sampling::SamplingParams;

fn engine(model: HashModel, max_num_seqs: usize) -> EngineHandle {
    spawn(
        model,
        Arc::new(ByteDecoder),
        EngineConfig {
            eos_token_ids: vec![EOS],
            vocab_size: VOCAB,
            max_num_seqs,
            ..EngineConfig::default()
        },
    )
    .expect("engine starts")
}

fn request(seed: u32, len: usize, max_tokens: usize) -> Request {
    Request {
        prompt_token_ids: (0..len as u32).map(|i| (i * 5 + seed) % 60).collect(),
        params: SamplingParams {
            temperature: 0.0,
            max_tokens,
            ignore_eos: true,
            ..SamplingParams::default()
        },
        priority: Priority::Interactive,
    }
}

/// Every output up to and including the one with usage.
fn finish(mut stream: OutputStream) -> Vec<RequestOutput> {
    let mut all = Vec::new();
    while let Some(out) = stream.blocking_next() {
        let done = out.usage.is_some();
        all.push(out);
        if done {
            break;
        }
    }
    all
}

fn wait_for(what: &str, engine: &EngineHandle, done: impl Fn(&EngineHandle) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(engine) {
        assert!(Instant::now() < deadline, "{what}: {:?}", engine.stats());
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn prefix_cache_lookups_count_whole_blocks_once_per_admission() {
    // Blocks of 4 tokens; a 10-token prompt has (10 - 1) / 4 = 2 reusable blocks.
    let engine = engine(HashModel::new(64, 4, 512), 8);
    finish(engine.submit(request(1, 10, 2)).expect("accepted"));
    wait_for("the first request's lookup", &engine, |e| {
        e.stats().prefix_cache_queries == 8
    });
    assert_eq!(engine.stats().prefix_cache_hits, 0);
    let outputs = finish(engine.submit(request(1, 10, 2)).expect("accepted"));
    let usage = outputs.last().and_then(|o| o.usage).expect("usage");
    assert_eq!(usage.cached_prompt_tokens, 8);
    wait_for("the second request's lookup", &engine, |e| {
        e.stats().prefix_cache_queries == 16
    });
    assert_eq!(engine.stats().prefix_cache_hits, 8);
    let s = engine.stats();
    assert!(s.steps > 0 && s.last_step_nanos > 0, "{s:?}");
    assert!(s.last_step_nanos <= s.step_nanos, "{s:?}");
}

#[test]
fn running_and_waiting_gauges_follow_requests() {
    let mut model = HashModel::new(64, 4, 512);
    let gate = Arc::new(Mutex::new(()));
    model.gate = Some(gate.clone());
    // One sequence at a time: the second request waits behind the first.
    let engine = engine(model, 1);
    let held = gate.lock().expect("gate");
    let first = engine.submit(request(1, 5, 3)).expect("accepted");
    let second = engine.submit(request(2, 5, 3)).expect("accepted");
    wait_for("one running, one waiting", &engine, |e| {
        let s = e.stats();
        (s.running_requests, s.waiting_requests) == (1, 1)
    });
    drop(held);
    finish(first);
    finish(second);
    wait_for("nothing left", &engine, |e| {
        let s = e.stats();
        (s.running_requests, s.waiting_requests) == (0, 0)
    });
}

#[test]
fn the_last_output_carries_timings_within_the_wall_time() {
    let mut model = HashModel::new(64, 4, 512);
    let gate = Arc::new(Mutex::new(()));
    model.gate = Some(gate.clone());
    let engine = engine(model, 1);
    let held = gate.lock().expect("gate");
    let start = Instant::now();
    let first = engine.submit(request(1, 5, 4)).expect("accepted");
    let second = engine.submit(request(2, 5, 4)).expect("accepted");
    wait_for("the first request admitted", &engine, |e| {
        e.stats().running_requests == 1
    });
    // The second request waits at least this long behind the first.
    std::thread::sleep(Duration::from_millis(30));
    drop(held);
    let a = finish(first);
    let b = finish(second);
    let wall = start.elapsed();
    for outputs in [&a, &b] {
        let (last, rest) = outputs.split_last().expect("outputs");
        assert!(rest.iter().all(|o| o.timings.is_none()));
        let t = last.timings.expect("timings on the last output");
        assert!(t.queued + t.prefill + t.decode <= wall, "{t:?} vs {wall:?}");
    }
    let t = b.last().and_then(|o| o.timings).expect("timings");
    assert!(t.queued >= Duration::from_millis(30), "{t:?}");
}
