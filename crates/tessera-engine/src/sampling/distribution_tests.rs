//! Distribution tests: empirical frequencies of many seeded draws against
//! the expected (filtered, renormalized) softmax.

use super::*;

#[test]
fn frequencies_match_softmax_with_temperature() {
    let logits = [2.0f32, 1.0, 0.5, 0.0, -1.0, -3.0];
    for (t, seed) in [(0.7f32, 1u64), (1.0, 2), (1.6, 3)] {
        let p = SamplingParams {
            temperature: t,
            ..seeded(seed)
        };
        assert_matches(
            &histogram(p, &logits, 20_000),
            &softmax(&logits, f64::from(t)),
        );
    }
}

#[test]
fn frequencies_after_top_k_and_top_p_are_renormalized() {
    let logits = [2.0f32, 1.0, 0.5, 0.0, -1.0, -3.0];
    // top_k = 3: the softmax over the first three, zero elsewhere.
    let p = SamplingParams {
        top_k: 3,
        ..seeded(5)
    };
    let mut want = softmax(&logits[..3], 1.0);
    want.resize(6, 0.0);
    let counts = histogram(p, &logits, 20_000);
    assert_eq!(&counts[3..], &[0, 0, 0]);
    assert_matches(&counts, &want);
    // top_p = 0.8: probabilities are .5609, .2063, .1252, ... so the nucleus is
    // {0, 1} (cum .7672 < .8) plus 2 (cum .8924): the same three tokens.
    let p = SamplingParams {
        top_p: 0.8,
        ..seeded(6)
    };
    let counts = histogram(p, &logits, 20_000);
    assert_eq!(&counts[3..], &[0, 0, 0]);
    assert_matches(&counts, &want);
}

#[test]
fn top_k_2_never_leaves_the_top_two() {
    let logits = [0.1f32, 0.9, 0.2, 0.8, 0.85, 0.3];
    let counts = histogram(
        SamplingParams {
            top_k: 2,
            temperature: 3.0,
            ..seeded(9)
        },
        &logits,
        5_000,
    );
    assert_eq!(counts[0] + counts[2] + counts[3] + counts[5], 0);
    assert!(counts[1] > 0 && counts[4] > 0);
}

#[test]
fn min_p_and_top_p_sets_through_the_sampler() {
    // Probabilities .5 .3 .15 .05 (ids 1, 3, 2, 0).
    let logits: Vec<f32> = [0.05f32, 0.5, 0.15, 0.3].iter().map(|p| p.ln()).collect();
    let counts = histogram(
        SamplingParams {
            min_p: 0.4,
            ..seeded(10)
        },
        &logits,
        3_000,
    );
    assert_eq!((counts[0], counts[2]), (0, 0));
    assert!(counts[1] > 0 && counts[3] > 0);
    let counts = histogram(
        SamplingParams {
            top_p: 0.9,
            ..seeded(11)
        },
        &logits,
        3_000,
    );
    assert_eq!(counts[0], 0);
    assert!(counts[1] > 0 && counts[2] > 0 && counts[3] > 0);
}
