//! Property tests: for random logits and parameters the sampler never panics,
//! stays in the vocabulary, never picks a masked token unless everything is
//! masked (then the raw argmax), and is deterministic under a seed.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;

/// A logit: mostly finite, sometimes -inf (masked) or NaN (treated as masked).
fn logit() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -30.0f32..30.0,
        2 => Just(f32::NEG_INFINITY),
        1 => Just(f32::NAN),
        1 => Just(0.0f32),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    logits: Vec<f32>,
    params: SamplingParams,
    prompt: Vec<u32>,
    output: Vec<u32>,
    eos: Vec<u32>,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..200).prop_flat_map(|vocab| {
        let v = vocab as u32;
        let tokens = move |n| prop::collection::vec(0..v, 0..n);
        let sampling = (
            prop_oneof![Just(0.0f32), 0.05f32..3.0],
            prop_oneof![Just(0usize), 1usize..12],
            prop_oneof![Just(1.0f32), 0.01f32..1.0],
            prop_oneof![Just(0.0f32), 0.0f32..=1.0],
            any::<u64>(),
            prop_oneof![Just(None), (0usize..=20).prop_map(Some)],
        );
        let penalties = (
            prop_oneof![Just(1.0f32), 0.2f32..3.0],
            -2.0f32..=2.0,
            -2.0f32..=2.0,
            prop::collection::vec((0..v, -100.0f32..=100.0), 0..4),
            0usize..4,
            any::<bool>(),
            tokens(4),
        );
        (
            prop::collection::vec(logit(), vocab),
            sampling,
            penalties,
            tokens(30),
            tokens(10),
            tokens(3),
        )
            .prop_map(|(logits, s, pen, prompt, output, eos)| {
                let (temperature, top_k, top_p, min_p, seed, logprobs) = s;
                let (
                    repetition_penalty,
                    presence_penalty,
                    frequency_penalty,
                    logit_bias,
                    min_tokens,
                    ignore_eos,
                    stop_token_ids,
                ) = pen;
                let params = SamplingParams {
                    temperature,
                    top_k,
                    top_p,
                    min_p,
                    seed: Some(seed),
                    logprobs,
                    repetition_penalty,
                    presence_penalty,
                    frequency_penalty,
                    logit_bias,
                    min_tokens: min_tokens.min(16),
                    ignore_eos,
                    stop_token_ids,
                    ..Default::default()
                };
                Case {
                    logits,
                    params,
                    prompt,
                    output,
                    eos,
                }
            })
    })
}

/// A dense, obviously-correct version of the logit processing (penalties,
/// bias, min_tokens mask), for differential checks. Same float operations in
/// the same order as the sampler, so results agree bit for bit.
fn reference_processed(c: &Case) -> Vec<f32> {
    let p = &c.params;
    let mut l = c.logits.clone();
    let mut counts = std::collections::HashMap::new();
    for &t in &c.output {
        *counts.entry(t).or_insert(0u32) += 1;
    }
    for t in 0..l.len() as u32 {
        let count = counts.get(&t).copied().unwrap_or(0);
        let x = &mut l[t as usize];
        if p.repetition_penalty != 1.0 && (count > 0 || c.prompt.contains(&t)) {
            *x = if *x > 0.0 {
                *x / p.repetition_penalty
            } else {
                *x * p.repetition_penalty
            };
        }
        if count > 0 && (p.presence_penalty != 0.0 || p.frequency_penalty != 0.0) {
            *x -= p.frequency_penalty * count as f32;
            *x -= p.presence_penalty;
        }
    }
    for &(t, b) in &p.logit_bias {
        l[t as usize] += b;
    }
    if c.output.len() < p.min_tokens {
        let eos: &[u32] = if p.ignore_eos { &[] } else { &c.eos };
        for &t in p.stop_token_ids.iter().chain(eos) {
            l[t as usize] = f32::NEG_INFINITY;
        }
    }
    l
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn sample_is_in_vocab_unmasked_and_deterministic(c in case()) {
        prop_assert_eq!(c.params.validate(c.logits.len()), Ok(()));
        let params = Arc::new(c.params.clone());
        let r = Sampler::new(Arc::clone(&params), 3)
            .sample(&mut c.logits.clone(), &c.prompt, &c.output, &c.eos);
        let vocab = c.logits.len() as u32;
        prop_assert!(r.token < vocab);
        let processed = reference_processed(&c);
        let masked = |t: u32| processed[t as usize] == f32::NEG_INFINITY || processed[t as usize].is_nan();
        let chosen = processed[r.token as usize];
        if (0..vocab).all(masked) {
            // Documented fallback: the raw argmax, lowest id on ties, else 0.
            let raw_max = c.logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let want = c.logits.iter().position(|&x| x == raw_max && x > f32::NEG_INFINITY).unwrap_or(0);
            prop_assert_eq!(r.token as usize, want);
        } else if c.params.is_greedy() {
            let want = (0..vocab).find(|&t| processed[t as usize] == processed.iter().copied().fold(f32::NEG_INFINITY, f32::max));
            prop_assert_eq!(Some(r.token), want);
        } else {
            prop_assert!(!masked(r.token), "picked masked token {}", r.token);
            let above = processed.iter().filter(|&&x| x > chosen).count();
            if c.params.top_k > 0 {
                prop_assert!(above < c.params.top_k, "outside top_k: {} above", above);
            }
            let max = processed.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let rel = f64::from((chosen - max) / c.params.temperature).exp();
            prop_assert!(rel >= f64::from(c.params.min_p) * (1.0 - 1e-4), "below min_p: {}", rel);
        }
        match c.params.logprobs {
            None => prop_assert!(r.logprob.is_none() && r.top_logprobs.is_empty()),
            Some(k) => {
                prop_assert_eq!(r.top_logprobs.len(), k.min(c.logits.len()));
                prop_assert!(r.top_logprobs.windows(2).all(|w| w[0].1 >= w[1].1));
                let lp = r.logprob.unwrap();
                prop_assert!(lp <= 1e-6);
                if c.logits[r.token as usize].is_finite() {
                    prop_assert!(lp.is_finite());
                }
            }
        }
        // Same seed and index: same token; the input row is unchanged in meaning.
        let again = Sampler::new(params, 3).sample(&mut c.logits.clone(), &c.prompt, &c.output, &c.eos);
        prop_assert_eq!(again.token, r.token);
    }

    #[test]
    fn unvalidated_params_never_panic(
        logits in prop::collection::vec(logit(), 0..50),
        temperature in prop_oneof![Just(f32::NAN), Just(-1.0f32), Just(1e-30f32), Just(f32::INFINITY), 0.0f32..2.0],
        top_p in prop_oneof![Just(f32::NAN), Just(0.0f32), Just(-1.0f32), Just(5.0f32)],
        min_p in prop_oneof![Just(f32::NAN), Just(2.0f32), Just(-1.0f32)],
        repetition_penalty in prop_oneof![Just(f32::NAN), Just(0.0f32), Just(-1.0f32)],
        top_k in 0usize..100,
        bad_token in any::<u32>(),
    ) {
        let p = SamplingParams {
            temperature, top_p, min_p, repetition_penalty, top_k,
            presence_penalty: f32::NAN,
            logit_bias: vec![(bad_token, f32::INFINITY)],
            stop_token_ids: vec![bad_token],
            min_tokens: 3,
            logprobs: Some(50),
            ..Default::default()
        };
        let r = Sampler::new(Arc::new(p), usize::MAX)
            .sample(&mut logits.clone(), &[bad_token, 0], &[bad_token], &[bad_token]);
        prop_assert!(logits.is_empty() || (r.token as usize) < logits.len());
    }
}
