//! Token selection: greedy argmax, and the random path (temperature, min_p,
//! top_k, top_p, then one draw).
//!
//! The random path never scales or sorts the whole row. Weights are
//! `exp((l - max) / T)`, i.e. probabilities relative to the most likely token,
//! so min_p is a plain threshold on them; top_k is one `select_nth_unstable_by`;
//! top_p sorts only as long a prefix as the nucleus needs.

use std::cmp::Ordering;

/// The random path's filters, taken from `SamplingParams`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Filters {
    pub inv_temperature: f32,
    pub min_p: f32,
    pub top_k: usize,
    pub top_p: f32,
}

/// Vocabulary-sized buffers of the random path, reused across calls.
#[derive(Default)]
pub(crate) struct SelectScratch {
    /// Dense weights, indexed by token (used when top_k is off).
    weights: Vec<f32>,
    /// `(token, logit or weight)` of the surviving candidates otherwise.
    candidates: Vec<(u32, f32)>,
    /// Top_p path: the candidates of the bucket where the nucleus ends.
    boundary: Vec<(u32, f32)>,
    /// Top_p path: the mass of each log-weight bucket.
    histogram: Vec<f64>,
}

/// Which scratch buffer holds the kept tokens' weights, and their sum.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kept {
    Dense { total: f64 },
    Sparse { total: f64 },
}

/// Index of the largest logit, lowest id on ties, NaN skipped; `None` when
/// every logit is -inf or NaN. A single pass.
pub(crate) fn argmax(logits: &[f32]) -> Option<u32> {
    // Two passes the compiler vectorizes (a running index does not): the
    // largest value, then its first position. `f32::max` skips NaN, so NaN is
    // never chosen, and an all -inf/NaN row has no maximum above -inf.
    const LANES: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = logits.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = m.max(x);
        }
    }
    let best = lanes
        .iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    if best == f32::NEG_INFINITY {
        return None;
    }
    logits.iter().position(|&x| x == best).map(|i| i as u32)
}

/// Descending by value, then ascending by id: a total order (values are never
/// NaN here), so selection and sorting are deterministic across runs.
fn by_value_desc(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Applies temperature, min_p, top_k and top_p to `logits`, leaving the kept
/// tokens' weights in `s`. `None` when nothing can be drawn (every logit -inf
/// or NaN, or weights degenerate, e.g. from a NaN temperature).
pub(crate) fn filter(logits: &[f32], f: &Filters, s: &mut SelectScratch) -> Option<Kept> {
    let lmax = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if lmax == f32::NEG_INFINITY || lmax.is_nan() {
        return None;
    }
    if lmax == f32::INFINITY {
        // The softmax limit: all mass on the +inf logits, shared equally.
        s.candidates.clear();
        s.candidates.extend(
            (0u32..)
                .zip(logits)
                .filter(|(_, &l)| l == f32::INFINITY)
                .map(|(i, _)| (i, 1.0)),
        );
        return Some(Kept::Sparse {
            total: s.candidates.len() as f64,
        });
    }
    // Probability relative to the top token; min_p is then `w >= min_p`. NaN
    // logits give NaN, which fails the comparison and becomes weight 0.
    let weight = |l: f32| {
        let w = ((l - lmax) * f.inv_temperature).exp();
        if w >= f.min_p {
            w
        } else {
            0.0
        }
    };
    let top_p_on = f.top_p < 1.0;
    if f.top_k > 0 && f.top_k < logits.len() {
        s.candidates.clear();
        s.candidates.extend(
            (0u32..)
                .zip(logits)
                .filter(|(_, &l)| l > f32::NEG_INFINITY)
                .map(|(i, &l)| (i, l)),
        );
        if s.candidates.len() > f.top_k {
            s.candidates
                .select_nth_unstable_by(f.top_k - 1, by_value_desc);
            s.candidates.truncate(f.top_k);
        }
        // min_p after top_k is the same set as before it: both keep a
        // descending prefix that always contains the top token.
        for c in &mut s.candidates {
            c.1 = weight(c.1);
        }
        s.candidates.retain(|c| c.1 > 0.0);
        let total = sum(&s.candidates);
        if top_p_on {
            nucleus(&mut s.candidates, f64::from(f.top_p) * total);
            return positive(sum(&s.candidates), Kept::Sparse { total: 0.0 });
        }
        return positive(total, Kept::Sparse { total: 0.0 });
    }
    s.weights.clear();
    if !top_p_on {
        s.weights.extend(logits.iter().map(|&l| weight(l)));
        let total: f64 = s.weights.iter().map(|&w| f64::from(w)).sum();
        return positive(total, Kept::Dense { total: 0.0 });
    }
    // top_p without top_k: bucket the tokens by log-weight while computing the
    // weights, find the bucket where the cumulative mass crosses top_p, and sort
    // only that bucket. Buckets are monotone in the logit, so tokens in earlier
    // buckets are in the nucleus and later ones out, exactly as a full sort
    // would decide, at the cost of two linear passes.
    let neg_log_weight = |l: f32| (lmax - l) * f.inv_temperature;
    s.histogram.clear();
    s.histogram.resize(BUCKETS, 0.0);
    let mut total = 0.0f64;
    for &l in logits {
        let w = weight(l);
        s.weights.push(w);
        if w > 0.0 {
            s.histogram[bucket(neg_log_weight(l))] += f64::from(w);
            total += f64::from(w);
        }
    }
    let target = f64::from(f.top_p) * total;
    let mut above = 0.0f64;
    let mut boundary = BUCKETS - 1;
    for (b, &mass) in s.histogram.iter().enumerate() {
        if above + mass >= target {
            boundary = b;
            break;
        }
        above += mass;
    }
    s.candidates.clear();
    s.boundary.clear();
    // Cheap reject first: a logit this far below the max lies past the
    // boundary bucket (the margin absorbs rounding); only the few tokens above
    // it pay for the exact bucket computation.
    let cut = lmax - (boundary as f32 + 2.0) / BUCKET_SCALE / f.inv_temperature * 1.001;
    let cut = cut - lmax.abs() * 1e-6;
    for ((i, &w), &l) in (0u32..).zip(&s.weights).zip(logits) {
        if l >= cut && w > 0.0 {
            let b = bucket(neg_log_weight(l));
            if b < boundary {
                s.candidates.push((i, w));
            } else if b == boundary {
                s.boundary.push((i, w));
            }
        }
    }
    // The earlier buckets hold less than `target` (or nothing), so the
    // boundary bucket always contributes at least one token.
    nucleus(&mut s.boundary, target - above);
    s.candidates.extend_from_slice(&s.boundary);
    positive(sum(&s.candidates), Kept::Sparse { total: 0.0 })
}

/// Log-weight buckets of the top_p path: bucket `b` holds the tokens with
/// `(max - l) / T` in `[b, b + 1) / BUCKET_SCALE` nats; the last one also
/// takes everything further down (weights below e^-64, i.e. negligible).
const BUCKET_SCALE: f32 = 16.0;
const BUCKETS: usize = 1024;

#[inline]
fn bucket(neg_log_weight: f32) -> usize {
    // `as` saturates (and maps NaN to 0), so this never indexes out of range.
    ((neg_log_weight * BUCKET_SCALE) as usize).min(BUCKETS - 1)
}

fn sum(c: &[(u32, f32)]) -> f64 {
    c.iter().map(|c| f64::from(c.1)).sum()
}

/// `kept` with `total` filled in, or `None` if there is no mass to draw from.
fn positive(total: f64, kept: Kept) -> Option<Kept> {
    if !(total > 0.0 && total.is_finite()) {
        return None;
    }
    Some(match kept {
        Kept::Dense { .. } => Kept::Dense { total },
        Kept::Sparse { .. } => Kept::Sparse { total },
    })
}

/// Keeps the smallest descending-weight prefix of `c` whose mass reaches
/// `target` (always at least one token), as vLLM's top-p does. Sorts only what
/// it needs: the best 64 first, then 4x more each round, each round selecting
/// its chunk from the unsorted rest with `select_nth_unstable_by`.
fn nucleus(c: &mut Vec<(u32, f32)>, target: f64) {
    let mut sorted = 0;
    let mut chunk = 64usize;
    let mut cum = 0.0f64;
    while sorted < c.len() {
        let end = sorted.saturating_add(chunk).min(c.len());
        if end < c.len() {
            c[sorted..].select_nth_unstable_by(end - sorted - 1, by_value_desc);
        }
        c[sorted..end].sort_unstable_by(by_value_desc);
        for j in sorted..end {
            if j > 0 && cum >= target {
                c.truncate(j);
                return;
            }
            cum += f64::from(c[j].1);
        }
        sorted = end;
        chunk = chunk.saturating_mul(4);
    }
}

/// Draws from the kept weights with `u` uniform in [0, 1): the first token
/// whose cumulative weight exceeds `u * total`. Zero weights are never drawn.
pub(crate) fn draw(kept: Kept, s: &SelectScratch, u: f64) -> Option<u32> {
    match kept {
        Kept::Dense { total } => walk((0u32..).zip(s.weights.iter().copied()), u * total),
        Kept::Sparse { total } => walk(s.candidates.iter().copied(), u * total),
    }
}

fn walk(weights: impl Iterator<Item = (u32, f32)>, target: f64) -> Option<u32> {
    let mut acc = 0.0f64;
    let mut last = None;
    for (token, w) in weights {
        if w > 0.0 {
            acc += f64::from(w);
            last = Some(token);
            if target < acc {
                return last;
            }
        }
    }
    // Reached only through rounding (the sum is formed in the same order as
    // `total`, so normally never): the last kept token.
    last
}

/// The kept token ids, ascending (for tests).
#[cfg(test)]
pub(crate) fn kept_ids(kept: Kept, s: &SelectScratch) -> Vec<u32> {
    let mut ids: Vec<u32> = match kept {
        Kept::Dense { .. } => (0u32..)
            .zip(&s.weights)
            .filter(|(_, &w)| w > 0.0)
            .map(|(i, _)| i)
            .collect(),
        Kept::Sparse { .. } => s
            .candidates
            .iter()
            .filter(|c| c.1 > 0.0)
            .map(|c| c.0)
            .collect(),
    };
    ids.sort_unstable();
    ids
}

#[cfg(test)]
#[path = "select_tests.rs"]
mod tests;
