//! Tests of the selection filters on hand-computed examples.

use proptest::strategy::Strategy;

use super::*;

fn filters(top_k: usize, top_p: f32, min_p: f32) -> Filters {
    Filters {
        inv_temperature: 1.0,
        min_p,
        top_k,
        top_p,
    }
}

fn kept(logits: &[f32], f: Filters) -> Vec<u32> {
    let mut s = SelectScratch::default();
    let k = filter(logits, &f, &mut s).expect("something to draw");
    kept_ids(k, &s)
}

/// Logits whose softmax is exactly proportional to `probs`.
fn from_probs(probs: &[f32]) -> Vec<f32> {
    probs.iter().map(|p| p.ln()).collect()
}

#[test]
fn argmax_ties_to_lowest_and_skips_nan() {
    assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), Some(1));
    assert_eq!(argmax(&[f32::NAN, -1.0, f32::NAN, -1.0]), Some(1));
    assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NAN]), None);
    assert_eq!(argmax(&[]), None);
}

proptest::proptest! {
    /// The two-pass argmax equals the textbook one-pass scan (first strict
    /// maximum, NaN never chosen) on rows of any length with ties, NaN and
    /// infinities.
    #[test]
    fn argmax_equals_a_sequential_scan(
        row in proptest::collection::vec(
            proptest::prop_oneof![
                4 => (-3i32..3).prop_map(|v| v as f32),
                1 => proptest::strategy::Just(f32::NAN),
                1 => proptest::strategy::Just(f32::NEG_INFINITY),
                1 => proptest::strategy::Just(f32::INFINITY),
            ],
            0..80,
        )
    ) {
        let mut best = f32::NEG_INFINITY;
        let mut want = None;
        for (i, &x) in row.iter().enumerate() {
            if x > best {
                best = x;
                want = Some(i as u32);
            }
        }
        proptest::prop_assert_eq!(argmax(&row), want);
    }
}

#[test]
fn top_p_keeps_the_hand_computed_nucleus() {
    // Probabilities by id: 0.3, 0.1, 0.4, 0.2. Descending: 2 (0.4), 0 (0.7 cum),
    // 3 (0.9 cum), 1 (1.0 cum).
    let logits = from_probs(&[0.3, 0.1, 0.4, 0.2]);
    assert_eq!(kept(&logits, filters(0, 0.35, 0.0)), vec![2]);
    assert_eq!(kept(&logits, filters(0, 0.6, 0.0)), vec![0, 2]);
    assert_eq!(kept(&logits, filters(0, 0.75, 0.0)), vec![0, 2, 3]);
    assert_eq!(kept(&logits, filters(0, 0.95, 0.0)), vec![0, 1, 2, 3]);
    assert_eq!(kept(&logits, filters(0, 1.0, 0.0)), vec![0, 1, 2, 3]);
    // Even a tiny top_p keeps one token.
    assert_eq!(kept(&logits, filters(0, 1e-6, 0.0)), vec![2]);
}

#[test]
fn top_p_applies_to_the_top_k_renormalized_distribution() {
    // After top_k = 2: {2: 0.4, 0: 0.3} renormalized to 4/7 and 3/7.
    let logits = from_probs(&[0.3, 0.1, 0.4, 0.2]);
    assert_eq!(kept(&logits, filters(2, 0.55, 0.0)), vec![2]);
    assert_eq!(kept(&logits, filters(2, 0.6, 0.0)), vec![0, 2]);
    // On the full distribution, 0.6 needs the same two, 0.65 too; 0.75 needs three
    // there, but top_k caps it at two.
    assert_eq!(kept(&logits, filters(2, 0.75, 0.0)), vec![0, 2]);
}

#[test]
fn min_p_drops_tokens_below_the_scaled_max() {
    // Probabilities 0.5, 0.3, 0.15, 0.05: with min_p 0.25 the cut is 0.125.
    let logits = from_probs(&[0.05, 0.5, 0.15, 0.3]);
    assert_eq!(kept(&logits, filters(0, 1.0, 0.25)), vec![1, 2, 3]);
    assert_eq!(kept(&logits, filters(0, 1.0, 0.5)), vec![1, 3]);
    assert_eq!(kept(&logits, filters(0, 1.0, 0.9)), vec![1]);
    assert_eq!(kept(&logits, filters(0, 1.0, 0.05)), vec![0, 1, 2, 3]);
    // Same through the top_k path.
    assert_eq!(kept(&logits, filters(3, 1.0, 0.5)), vec![1, 3]);
    // Temperature sharpens before the cut: T = 0.5 squares the ratios, so 0.3/0.5
    // becomes 0.36 and 0.15/0.5 becomes 0.09.
    let f = Filters {
        inv_temperature: 2.0,
        ..filters(0, 1.0, 0.25)
    };
    assert_eq!(kept(&logits, f), vec![1, 3]);
}

#[test]
fn top_k_keeps_exactly_k_with_ties_to_lower_ids() {
    let logits = [0.0, 5.0, 1.0, 5.0, 4.0, 5.0, f32::NEG_INFINITY];
    assert_eq!(kept(&logits, filters(2, 1.0, 0.0)), vec![1, 3]);
    assert_eq!(kept(&logits, filters(4, 1.0, 0.0)), vec![1, 3, 4, 5]);
    // -inf is never a candidate, even when k exceeds the finite tokens.
    assert_eq!(kept(&logits, filters(6, 1.0, 0.0)), vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn nucleus_on_a_large_vocab_matches_a_full_sort() {
    // 20k candidates with a slowly decaying tail, at normal and tiny temperature
    // (the latter with logits 1e-4 apart so that weights stay comparable).
    let n = 20_000u32;
    for (scale, inv_t) in [(1.0f32, 1.0f32), (1.0, 3.0), (1e-4, 1e4)] {
        let logits: Vec<f32> = (0..n)
            .map(|i| -(((i * 7_919) % n) as f32) / 4_000.0 * scale)
            .collect();
        for &p in &[0.01f32, 0.3, 0.9, 0.999] {
            let f = Filters {
                inv_temperature: inv_t,
                ..filters(0, p, 0.0)
            };
            let got = kept(&logits, f);
            // Reference: sort everything, walk until the mass reaches p.
            let w: Vec<f64> = logits
                .iter()
                .map(|&l| f64::from((l * inv_t).exp()))
                .collect();
            let total: f64 = w.iter().sum();
            let mut order: Vec<u32> = (0..n).collect();
            order.sort_by(|&a, &b| w[b as usize].total_cmp(&w[a as usize]).then(a.cmp(&b)));
            let (mut cum, mut want) = (0.0, Vec::new());
            for &t in &order {
                if !want.is_empty() && cum >= f64::from(p) * total {
                    break;
                }
                cum += w[t as usize];
                want.push(t);
            }
            want.sort_unstable();
            assert_eq!(got.len(), want.len(), "top_p {p}, 1/T {inv_t}");
            assert_eq!(got, want, "top_p {p}, 1/T {inv_t}");
        }
    }
}

#[test]
fn draw_follows_cumulative_weights() {
    let mut s = SelectScratch::default();
    let logits = from_probs(&[0.25, 0.0, 0.5, 0.25]);
    let k = filter(&logits, &filters(0, 1.0, 0.0), &mut s).unwrap();
    assert_eq!(draw(k, &s, 0.0), Some(0));
    assert_eq!(draw(k, &s, 0.2499), Some(0));
    assert_eq!(draw(k, &s, 0.2501), Some(2));
    assert_eq!(draw(k, &s, 0.7501), Some(3));
    assert_eq!(draw(k, &s, 0.999_999), Some(3));
}

#[test]
fn degenerate_rows() {
    let mut s = SelectScratch::default();
    let f = filters(0, 1.0, 0.0);
    assert!(filter(&[f32::NEG_INFINITY, f32::NAN], &f, &mut s).is_none());
    assert!(filter(&[], &f, &mut s).is_none());
    let nan_t = Filters {
        inv_temperature: f32::NAN,
        ..f
    };
    assert!(filter(&[1.0, 2.0], &nan_t, &mut s).is_none());
    let k = filter(&[0.0, f32::INFINITY, 1.0, f32::INFINITY], &f, &mut s).unwrap();
    assert_eq!(kept_ids(k, &s), vec![1, 3]);
    assert_eq!(draw(k, &s, 0.4), Some(1));
    assert_eq!(draw(k, &s, 0.6), Some(3));
}
