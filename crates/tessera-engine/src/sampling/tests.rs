//! Sampler-level tests: the whole pipeline through `Sampler::sample`.

use std::sync::Arc;

use super::*;

#[path = "distribution_tests.rs"]
mod distribution;

const NINF: f32 = f32::NEG_INFINITY;

fn sampler(p: SamplingParams) -> Sampler {
    Sampler::new(Arc::new(p), 0)
}

fn seeded(seed: u64) -> SamplingParams {
    SamplingParams {
        seed: Some(seed),
        ..Default::default()
    }
}

fn one(s: &mut Sampler, logits: &[f32], output: &[u32], eos: &[u32]) -> SampledToken {
    s.sample(&mut logits.to_vec(), &[], output, eos)
}

/// Draws `n` tokens from fixed logits (no penalties), returning counts per id.
fn histogram(p: SamplingParams, logits: &[f32], n: usize) -> Vec<usize> {
    let mut s = sampler(p);
    let mut counts = vec![0; logits.len()];
    for _ in 0..n {
        counts[one(&mut s, logits, &[], &[]).token as usize] += 1;
    }
    counts
}

fn softmax(logits: &[f32], t: f64) -> Vec<f64> {
    let m = logits
        .iter()
        .map(|&x| f64::from(x))
        .fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits
        .iter()
        .map(|&x| ((f64::from(x) - m) / t).exp())
        .collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|x| x / z).collect()
}

/// Each empirical frequency within 4.5 binomial standard deviations of its
/// expectation. For one token the chance of a false alarm is ~7e-6, so ~4e-5
/// for a 6-token row; the seed is fixed, so the test is deterministic, and a
/// wrong distribution (e.g. temperature applied twice, an off-by-one in the
/// cumulative walk) moves some frequency by far more than 4.5 sigma at n = 20k.
fn assert_matches(counts: &[usize], want: &[f64]) {
    let n = counts.iter().sum::<usize>() as f64;
    for (i, (&c, &p)) in counts.iter().zip(want).enumerate() {
        let sigma = (p * (1.0 - p) / n).sqrt();
        let f = c as f64 / n;
        assert!(
            (f - p).abs() <= 4.5 * sigma + 1e-12,
            "token {i}: frequency {f} vs p {p} (sigma {sigma})"
        );
    }
}

#[test]
fn greedy_is_argmax_with_ties_to_lowest_id() {
    let greedy = SamplingParams {
        temperature: 0.0,
        ..Default::default()
    };
    let mut s = sampler(greedy.clone());
    assert_eq!(one(&mut s, &[1.0, 3.0, 3.0, 2.0], &[], &[]).token, 1);
    assert_eq!(one(&mut s, &[-5.0, -5.0], &[], &[]).token, 0);
    assert_eq!(one(&mut s, &[0.0, 0.5, f32::NAN, 0.7], &[], &[]).token, 3);
    // Temperature 0 ignores top_k / top_p / min_p entirely, for any seed.
    for seed in 0..50 {
        let p = SamplingParams {
            top_k: 3,
            top_p: 0.2,
            min_p: 0.9,
            seed: Some(seed),
            ..greedy.clone()
        };
        assert_eq!(
            one(&mut sampler(p), &[0.1, 0.4, 0.2, 0.4, 0.3], &[], &[]).token,
            1
        );
    }
}

/// 200 steps of a sequence whose logits depend on the step, with penalties
/// fed by its own output.
fn run(params: &Arc<SamplingParams>, index: usize) -> Vec<u32> {
    let mut s = Sampler::new(Arc::clone(params), index);
    let mut out = Vec::new();
    for step in 0..200u32 {
        let mut logits: Vec<f32> = (0..64u32)
            .map(|t| ((t * 31 + step * 7) % 17) as f32 / 8.0)
            .collect();
        let tok = s.sample(&mut logits, &[1, 2, 3], &out, &[63]).token;
        out.push(tok);
    }
    out
}

#[test]
fn seeds_reproduce_and_distinguish_streams() {
    let p = |seed| {
        Arc::new(SamplingParams {
            repetition_penalty: 1.1,
            frequency_penalty: 0.1,
            ..seeded(seed)
        })
    };
    let a = run(&p(42), 0);
    assert_eq!(a, run(&p(42), 0), "same seed, same tokens");
    assert_ne!(a, run(&p(43), 0), "different seeds differ");
    assert_ne!(a, run(&p(42), 1), "different sample indices differ");
    assert_ne!(
        run(&p(42), 1),
        run(&p(43), 0),
        "index 1 of s is not index 0 of s + 1"
    );
    // Another sampler drawing in between (sharing the thread's scratch) does
    // not disturb a seeded stream.
    let mut s1 = sampler(seeded(7));
    let mut other = sampler(SamplingParams {
        top_k: 2,
        ..seeded(8)
    });
    let mut s2 = sampler(seeded(7));
    let l = [0.3f32, 0.1, 0.9, 0.5];
    for _ in 0..100 {
        one(&mut other, &l, &[], &[]);
        assert_eq!(one(&mut s1, &l, &[], &[]), one(&mut s2, &l, &[], &[]));
    }
}

#[test]
fn unseeded_samplers_differ() {
    let p = Arc::new(SamplingParams::default());
    assert_ne!(run(&p, 0), run(&p, 0));
}

#[test]
fn logit_bias_forces_and_bans() {
    let flat = [0.0f32; 8];
    let p = SamplingParams {
        logit_bias: vec![(5, 100.0)],
        ..seeded(12)
    };
    assert_eq!(histogram(p, &flat, 500)[5], 500);
    let greedy = SamplingParams {
        temperature: 0.0,
        logit_bias: vec![(6, 100.0)],
        ..Default::default()
    };
    assert_eq!(
        one(
            &mut sampler(greedy),
            &[9.0, 50.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            &[],
            &[]
        )
        .token,
        6
    );
    let ban = SamplingParams {
        logit_bias: (0..7).map(|t| (t, -100.0)).collect(),
        ..seeded(13)
    };
    assert_eq!(histogram(ban, &flat, 500)[7], 500);
}

#[test]
fn min_tokens_masks_eos_and_stop_ids_until_reached() {
    // EOS (4) and stop id 2 are the two most likely tokens.
    let logits = [1.0f32, 0.0, 5.0, 2.0, 9.0];
    let p = SamplingParams {
        temperature: 0.0,
        min_tokens: 2,
        stop_token_ids: vec![2],
        ..Default::default()
    };
    let mut s = sampler(p.clone());
    assert_eq!(one(&mut s, &logits, &[], &[4]).token, 3);
    assert_eq!(one(&mut s, &logits, &[3], &[4]).token, 3);
    assert_eq!(one(&mut s, &logits, &[3, 3], &[4]).token, 4);
    // ignore_eos: EOS is not masked (vLLM), stop ids still are.
    let mut s = sampler(SamplingParams {
        ignore_eos: true,
        ..p.clone()
    });
    assert_eq!(one(&mut s, &logits, &[], &[4]).token, 4);
    let mut s = sampler(SamplingParams {
        ignore_eos: true,
        logit_bias: vec![(4, -100.0)],
        ..p
    });
    assert_eq!(one(&mut s, &logits, &[], &[4]).token, 3);
    // Random path: never EOS or the stop id while masked.
    let p = SamplingParams {
        min_tokens: 1,
        stop_token_ids: vec![2],
        ..seeded(14)
    };
    let mut s = sampler(p);
    for _ in 0..500 {
        let t = one(&mut s, &logits, &[], &[4]).token;
        assert!(t != 4 && t != 2);
    }
}

#[test]
fn all_masked_falls_back_to_raw_argmax() {
    let p = SamplingParams {
        min_tokens: 5,
        stop_token_ids: vec![0],
        ..seeded(15)
    };
    let logits = [3.0f32, NINF, 7.0, NINF];
    assert_eq!(one(&mut sampler(p.clone()), &logits, &[], &[2]).token, 2);
    assert_eq!(one(&mut sampler(p.clone()), &[NINF; 4], &[], &[2]).token, 0);
    assert_eq!(one(&mut sampler(p), &[], &[], &[2]).token, 0);
}

#[test]
fn penalties_change_the_greedy_choice() {
    let greedy = SamplingParams {
        temperature: 0.0,
        ..Default::default()
    };
    let logits = [2.0f32, 1.5, -1.0];
    let mut s = sampler(SamplingParams {
        repetition_penalty: 1.5,
        ..greedy.clone()
    });
    assert_eq!(
        s.sample(&mut logits.to_vec(), &[0], &[], &[]).token,
        1,
        "2/1.5 < 1.5"
    );
    let mut s = sampler(SamplingParams {
        presence_penalty: 0.6,
        ..greedy.clone()
    });
    assert_eq!(s.sample(&mut logits.to_vec(), &[], &[0], &[]).token, 1);
    assert_eq!(
        s.sample(&mut logits.to_vec(), &[0], &[], &[]).token,
        0,
        "prompt-only is exempt"
    );
    let mut s = sampler(SamplingParams {
        frequency_penalty: 0.2,
        ..greedy
    });
    assert_eq!(
        s.sample(&mut logits.to_vec(), &[], &[0, 0], &[]).token,
        0,
        "2 - 0.4 > 1.5"
    );
    assert_eq!(
        s.sample(&mut logits.to_vec(), &[], &[0, 0, 0], &[]).token,
        1,
        "2 - 0.6 < 1.5"
    );
}

fn reference_log_softmax(logits: &[f32]) -> Vec<f64> {
    softmax(logits, 1.0).iter().map(|p| p.ln()).collect()
}

#[test]
fn logprobs_come_from_the_raw_logits() {
    let raw = [1.0f32, 3.0, -2.0, 0.5, 3.0, 2.0];
    let want = reference_log_softmax(&raw);
    // Heavy processing: the chosen token (forced by bias) is not in the raw top 2.
    let p = SamplingParams {
        logprobs: Some(2),
        repetition_penalty: 1.7,
        presence_penalty: 1.0,
        logit_bias: vec![(2, 100.0)],
        temperature: 0.5,
        ..seeded(16)
    };
    let mut s = sampler(p);
    let r = s.sample(&mut raw.to_vec(), &[1, 4], &[1], &[]);
    assert_eq!(r.token, 2);
    assert!((f64::from(r.logprob.unwrap()) - want[2]).abs() < 1e-6);
    assert_eq!(
        r.top_logprobs.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![1, 4],
        "ties by id"
    );
    for &(t, lp) in &r.top_logprobs {
        assert!((f64::from(lp) - want[t as usize]).abs() < 1e-6);
    }
    // Longer list: sorted descending.
    let mut s = sampler(SamplingParams {
        logprobs: Some(5),
        temperature: 0.0,
        ..Default::default()
    });
    let r = s.sample(&mut raw.to_vec(), &[], &[], &[]);
    assert_eq!(
        r.top_logprobs.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![1, 4, 5, 0, 3]
    );
    assert!(r.top_logprobs.windows(2).all(|w| w[0].1 >= w[1].1));
    assert_eq!(r.logprob, Some(r.top_logprobs[0].1));
    // Some(0): only the chosen token's logprob. None: nothing.
    let mut s = sampler(SamplingParams {
        logprobs: Some(0),
        temperature: 0.0,
        ..Default::default()
    });
    let r = s.sample(&mut raw.to_vec(), &[], &[], &[]);
    assert!(r.top_logprobs.is_empty());
    assert!((f64::from(r.logprob.unwrap()) - want[1]).abs() < 1e-6);
    let r = sampler(seeded(1)).sample(&mut raw.to_vec(), &[], &[], &[]);
    assert_eq!((r.logprob, r.top_logprobs.len()), (None, 0));
}
