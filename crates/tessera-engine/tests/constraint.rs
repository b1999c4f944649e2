//! Constrained sampling through the whole engine over the fake model: only
//! allowed tokens come out, a complete constraint stops the sequence, an
//! incomplete one runs into `length`, every sample of `n` walks its own
//! state, and a constrained request gives the same tokens alone or batched
//! with others (and they with it).

mod common;

use std::sync::{Arc, Mutex};

use common::{ByteDecoder, HashModel, EOS, VOCAB};
use tessera_engine::engine::{spawn, EngineConfig, EngineHandle, OutputStream};
use tessera_engine::request::{FinishReason, Priority, Request};
use tessera_engine::sampling::SamplingParams;
use tessera_engine::{Constraint, ConstraintFactory, TokenConstraint};

/// Allows only tokens of `alphabet` until `length` tokens, then finishes.
/// Records every committed token, so the test sees what the engine committed.
struct Alphabet {
    alphabet: Vec<u32>,
    length: usize,
    committed: Arc<Mutex<Vec<Vec<u32>>>>,
}

struct AlphabetState {
    alphabet: Vec<u32>,
    length: usize,
    seen: Vec<u32>,
    slot: usize,
    committed: Arc<Mutex<Vec<Vec<u32>>>>,
}

impl ConstraintFactory for Alphabet {
    fn start(&self) -> Box<dyn TokenConstraint> {
        let mut log = self.committed.lock().expect("lock");
        log.push(Vec::new());
        Box::new(AlphabetState {
            alphabet: self.alphabet.clone(),
            length: self.length,
            seen: Vec::new(),
            slot: log.len() - 1,
            committed: self.committed.clone(),
        })
    }

    fn describe(&self) -> String {
        "alphabet".into()
    }
}

impl TokenConstraint for AlphabetState {
    fn fill_mask(&mut self, mask: &mut Vec<u32>) -> Result<(), String> {
        mask.clear();
        mask.resize(VOCAB.div_ceil(32), 0);
        for &t in &self.alphabet {
            mask[t as usize / 32] |= 1 << (t % 32);
        }
        Ok(())
    }

    fn commit(&mut self, token: u32) -> Result<(), String> {
        if !self.alphabet.contains(&token) {
            return Err(format!("token {token} is not allowed"));
        }
        self.seen.push(token);
        self.committed.lock().expect("lock")[self.slot].push(token);
        Ok(())
    }

    fn is_finished(&self) -> bool {
        self.seen.len() >= self.length
    }
}

fn engine() -> EngineHandle {
    spawn(
        HashModel::new(256, 4, 512),
        Arc::new(ByteDecoder),
        EngineConfig {
            eos_token_ids: vec![EOS],
            vocab_size: VOCAB,
            max_num_batched_tokens: 32,
            ..EngineConfig::default()
        },
    )
    .expect("engine starts")
}

fn alphabet(alphabet: &[u32], length: usize) -> (Constraint, Arc<Mutex<Vec<Vec<u32>>>>) {
    let committed = Arc::new(Mutex::new(Vec::new()));
    let c = Constraint::new(Alphabet {
        alphabet: alphabet.to_vec(),
        length,
        committed: committed.clone(),
    });
    (c, committed)
}

fn request(prompt_seed: u32, params: SamplingParams) -> Request {
    Request {
        prompt_token_ids: (0..9).map(|i| (i * 5 + prompt_seed * 3) % 60).collect(),
        params,
        priority: Priority::Interactive,
    }
}

/// Every sample's tokens and finish reason.
fn collect(mut stream: OutputStream, n: usize) -> Vec<(Vec<u32>, Option<FinishReason>)> {
    let mut out = vec![(Vec::new(), None); n];
    while let Some(o) = stream.blocking_next() {
        assert!(o.error.is_none(), "engine error: {:?}", o.error);
        out[o.index].0.extend(&o.token_ids);
        if o.finish_reason.is_some() {
            out[o.index].1 = o.finish_reason;
        }
    }
    out
}

fn sampled(seed: u64, n: usize, max_tokens: usize, c: &Constraint) -> SamplingParams {
    SamplingParams {
        n,
        temperature: 1.0,
        seed: Some(seed),
        max_tokens,
        constraint: Some(c.clone()),
        ..SamplingParams::default()
    }
}

#[test]
fn only_allowed_tokens_and_completion_stops_the_sequence() {
    let allowed = [3, 17, 40];
    let (c, committed) = alphabet(&allowed, 6);
    let out = collect(
        engine()
            .submit(request(1, sampled(9, 1, 50, &c)))
            .expect("ok"),
        1,
    );
    let (tokens, finish) = &out[0];
    assert_eq!(tokens.len(), 6, "{tokens:?}");
    assert!(tokens.iter().all(|t| allowed.contains(t)), "{tokens:?}");
    assert_eq!(*finish, Some(FinishReason::Stop));
    assert_eq!(committed.lock().expect("lock")[0], *tokens);
}

#[test]
fn an_incomplete_constraint_ends_with_length() {
    let (c, _) = alphabet(&[5, 6], 100);
    let out = collect(
        engine()
            .submit(request(2, sampled(1, 1, 7, &c)))
            .expect("ok"),
        1,
    );
    assert_eq!(out[0].0.len(), 7);
    assert_eq!(out[0].1, Some(FinishReason::Length));
}

#[test]
fn each_of_n_samples_walks_its_own_state() {
    let (c, committed) = alphabet(&[1, 2, 3, 4, 5, 6, 7, 8], 5);
    let out = collect(
        engine()
            .submit(request(3, sampled(4, 4, 50, &c)))
            .expect("ok"),
        4,
    );
    let mut logs = committed.lock().expect("lock").clone();
    assert_eq!(logs.len(), 4, "one state per sample");
    let mut tokens: Vec<Vec<u32>> = out.iter().map(|(t, _)| t.clone()).collect();
    tokens.sort();
    logs.sort();
    assert_eq!(tokens, logs, "each state saw exactly its sample's tokens");
    assert!(out
        .iter()
        .all(|(t, f)| t.len() == 5 && *f == Some(FinishReason::Stop)));
    assert!(
        tokens.windows(2).any(|w| w[0] != w[1]),
        "samples differ: {tokens:?}"
    );
}

#[test]
fn batching_changes_no_ones_tokens() {
    let (c, _) = alphabet(&[2, 9, 11, 30, 31, 44], 12);
    let mk = |i: u32| -> Request {
        if i.is_multiple_of(2) {
            request(i, sampled(100 + u64::from(i), 1, 20, &c))
        } else {
            let mut p = sampled(100 + u64::from(i), 1, 12, &c);
            p.constraint = None;
            request(i, p)
        }
    };
    let alone: Vec<_> = (0..8)
        .map(|i| collect(engine().submit(mk(i)).expect("ok"), 1))
        .collect();
    let e = engine();
    let streams: Vec<_> = (0..8).map(|i| e.submit(mk(i)).expect("ok")).collect();
    for (i, s) in streams.into_iter().enumerate() {
        assert_eq!(collect(s, 1), alone[i], "request {i}");
    }
}
