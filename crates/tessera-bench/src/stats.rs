//! Percentiles and distributions, defined as vLLM's benchmark defines them so
//! that numbers are comparable: percentiles interpolate linearly between the
//! closest ranks (numpy's default), TPOT excludes the first token.

use serde::{Deserialize, Serialize};

/// The `q`-th percentile (0 to 100) of `sorted` (ascending), interpolating
/// linearly between the two closest ranks like `numpy.percentile`. `None` for
/// no values.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = (q.clamp(0.0, 100.0) / 100.0) * last as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64))
}

/// Time per output token as vLLM defines it: the time after the first token
/// spread over the tokens after the first, `(latency - ttft) / (tokens - 1)`.
/// `None` with fewer than two tokens, where it is undefined.
pub fn tpot(latency: f64, ttft: f64, output_tokens: usize) -> Option<f64> {
    (output_tokens > 1).then(|| (latency - ttft) / (output_tokens - 1) as f64)
}

/// Summary statistics of one metric over a run, in the metric's unit (the
/// latency metrics of a [`crate::summary::Summary`] are in milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// Number of values.
    pub count: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Population standard deviation (numpy's default, ddof = 0).
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// 50th percentile.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value.
    pub max: f64,
}

impl Distribution {
    /// The distribution of `values` (any order); `None` when there are none,
    /// so that a metric nobody produced is absent rather than zero.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len() as f64;
        let mean = sorted.iter().sum::<f64>() / n;
        let var = sorted.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        Some(Self {
            count: sorted.len(),
            mean,
            std: var.sqrt(),
            min: sorted[0],
            median: percentile(&sorted, 50.0)?,
            p90: percentile(&sorted, 90.0)?,
            p99: percentile(&sorted, 99.0)?,
            max: sorted[sorted.len() - 1],
        })
    }

    /// The same distribution with every value multiplied by `factor` (e.g.
    /// seconds to milliseconds).
    pub fn scaled(self, factor: f64) -> Self {
        Self {
            count: self.count,
            mean: self.mean * factor,
            std: self.std * factor,
            min: self.min * factor,
            median: self.median * factor,
            p90: self.p90 * factor,
            p99: self.p99 * factor,
            max: self.max * factor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn percentiles_interpolate_between_ranks_like_numpy() {
        // numpy.percentile([1, 2, 3, 4], q): rank = q/100 * 3.
        let s = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&s, 0.0), Some(1.0));
        assert_eq!(percentile(&s, 100.0), Some(4.0));
        assert!(close(percentile(&s, 50.0).unwrap(), 2.5));
        assert!(close(percentile(&s, 90.0).unwrap(), 3.7)); // rank 2.7
        assert!(close(percentile(&s, 99.0).unwrap(), 3.97)); // rank 2.97
        assert!(close(percentile(&s, 25.0).unwrap(), 1.75)); // rank 0.75
                                                             // An exact rank needs no interpolation: [10, 20, 30, 40, 50] at 50 -> 30.
        assert_eq!(
            percentile(&[10.0, 20.0, 30.0, 40.0, 50.0], 50.0),
            Some(30.0)
        );
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn distribution_of_hand_computed_values() {
        // Unsorted on purpose. Mean 5, population variance
        // ((2-5)^2 + 3*(4-5)^2 + 2*(5-5)^2 + (7-5)^2 + (9-5)^2) / 8 = 32/8 = 4.
        let d = Distribution::of(&[9.0, 4.0, 2.0, 4.0, 5.0, 4.0, 7.0, 5.0]).unwrap();
        assert_eq!(d.count, 8);
        assert!(close(d.mean, 5.0));
        assert!(close(d.std, 2.0));
        assert_eq!((d.min, d.max), (2.0, 9.0));
        // Sorted: 2 4 4 4 5 5 7 9; median rank 3.5 -> 4.5; p90 rank 6.3 -> 7.6;
        // p99 rank 6.93 -> 7 + 0.93 * 2 = 8.86.
        assert!(close(d.median, 4.5));
        assert!(close(d.p90, 7.6));
        assert!(close(d.p99, 8.86));
        let ms = d.scaled(1000.0);
        assert!(close(ms.mean, 5000.0) && close(ms.p99, 8860.0));
        assert_eq!(Distribution::of(&[]), None);
        assert_eq!(Distribution::of(&[f64::NAN]), None);
    }

    #[test]
    fn tpot_excludes_the_first_token() {
        // 1.0 s end to end, first token at 0.2 s, 5 tokens: 4 gaps over 0.8 s.
        assert!(close(tpot(1.0, 0.2, 5).unwrap(), 0.2));
        assert!(close(tpot(2.5, 0.5, 2).unwrap(), 2.0));
        assert_eq!(tpot(1.0, 0.2, 1), None);
        assert_eq!(tpot(1.0, 0.2, 0), None);
    }
}
