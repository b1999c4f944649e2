//! Log-probabilities of the raw logits row (log_softmax of the model output,
//! before any processing: vLLM v1's default "raw_logprobs").

/// NaN counts as impossible (-inf); +inf is clamped to `f32::MAX` so a row
/// holding an infinite logit still yields finite, meaningful logprobs.
#[inline]
fn sanitize(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        x.min(f32::MAX)
    }
}

/// `log Σ exp(x)` over the row. The terms are exponentiated in f32 (cheap,
/// each relatively exact to ~1e-7) but summed in f64, so a 150k-token sum does
/// not lose the small terms. Returns -inf for an empty or all -inf row.
pub(crate) fn log_sum_exp(logits: &[f32]) -> f64 {
    let m = logits
        .iter()
        .map(|&x| sanitize(x))
        .fold(f32::NEG_INFINITY, f32::max);
    if m == f32::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let sum: f64 = logits
        .iter()
        .map(|&x| f64::from((sanitize(x) - m).exp()))
        .sum();
    f64::from(m) + sum.ln()
}

/// The logprob of a token whose raw logit is `x`, given the row's `lse`.
#[inline]
pub(crate) fn logprob(x: f32, lse: f64) -> f32 {
    let x = sanitize(x);
    if x == f32::NEG_INFINITY {
        f32::NEG_INFINITY
    } else {
        (f64::from(x) - lse) as f32
    }
}

/// Fills `out` with the `k` most likely tokens as `(token, logprob)`, sorted by
/// logprob descending, ties by lower id. One pass with a k-sized sorted buffer
/// (k <= 20), so no vocabulary-sized copy or sort is needed.
pub(crate) fn top_logprobs(logits: &[f32], k: usize, lse: f64, out: &mut Vec<(u32, f32)>) {
    out.clear();
    if k == 0 {
        return;
    }
    for (i, &x) in logits.iter().enumerate() {
        let x = sanitize(x);
        // Ids arrive in ascending order, so an equal value never displaces an
        // earlier entry: ties resolve to the lower id without comparing ids.
        if out.len() == k {
            if x <= out[k - 1].1 {
                continue;
            }
            out.pop();
        }
        let at = out.partition_point(|e| e.1 >= x);
        out.insert(at, (i as u32, x));
    }
    for e in out.iter_mut() {
        e.1 = logprob(e.1, lse);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward f64 log_softmax as the reference.
    fn reference(logits: &[f32]) -> Vec<f64> {
        let m = logits
            .iter()
            .map(|&x| f64::from(x))
            .fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = logits.iter().map(|&x| (f64::from(x) - m).exp()).sum();
        logits.iter().map(|&x| f64::from(x) - m - s.ln()).collect()
    }

    #[test]
    fn matches_f64_log_softmax() {
        // A large, spread row: 50k logits in roughly [-20, 25].
        let logits: Vec<f32> = (0..50_000u32)
            .map(|i| ((i * 7919 % 4513) as f32 / 100.0) - 20.0)
            .collect();
        let lse = log_sum_exp(&logits);
        let want = reference(&logits);
        for (i, &x) in logits.iter().enumerate() {
            let got = logprob(x, lse);
            assert!(
                (f64::from(got) - want[i]).abs() < 1e-4,
                "token {i}: {got} vs {}",
                want[i]
            );
        }
        let small = [1.0f32, 2.0, 3.0];
        let lse = log_sum_exp(&small);
        for (x, w) in small.iter().zip(reference(&small)) {
            assert!((f64::from(logprob(*x, lse)) - w).abs() < 1e-6);
        }
    }

    #[test]
    fn top_list_sorted_with_ties_by_id() {
        let logits = [0.0f32, 3.0, 1.0, 3.0, f32::NAN, 2.0, 1.0, f32::NEG_INFINITY];
        let lse = log_sum_exp(&logits);
        let mut out = Vec::new();
        top_logprobs(&logits, 4, lse, &mut out);
        let ids: Vec<u32> = out.iter().map(|e| e.0).collect();
        assert_eq!(ids, vec![1, 3, 5, 2]);
        for &(t, lp) in &out {
            assert_eq!(lp, logprob(logits[t as usize], lse));
        }
        assert!(out.windows(2).all(|w| w[0].1 >= w[1].1));
        // Asking for more than the vocabulary returns the whole row, -inf last.
        top_logprobs(&logits, 20, lse, &mut out);
        assert_eq!(out.len(), logits.len());
        assert_eq!(
            out.iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![1, 3, 5, 2, 6, 0, 4, 7]
        );
        assert_eq!(out[7].1, f32::NEG_INFINITY);
        top_logprobs(&logits, 0, lse, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn degenerate_rows() {
        assert_eq!(log_sum_exp(&[]), f64::NEG_INFINITY);
        let all_masked = [f32::NEG_INFINITY; 3];
        assert_eq!(
            logprob(all_masked[0], log_sum_exp(&all_masked)),
            f32::NEG_INFINITY
        );
        let inf = [f32::INFINITY, 0.0];
        let lse = log_sum_exp(&inf);
        assert_eq!(logprob(inf[0], lse), 0.0);
        assert!(logprob(inf[1], lse) < -1e30);
    }
}
