//! When each request arrives: all at once, or at `--request-rate` with gaps
//! drawn from a gamma distribution, as vLLM draws them. Shape 1 (burstiness 1)
//! is a Poisson process; below 1 arrivals come in bursts, above 1 they are
//! more even. The whole schedule is drawn up front from the seed, so it is the
//! same every run and costs nothing while the benchmark runs.

use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};

use crate::error::{BenchError, Result};

/// Offsets from the start of the run at which the `n` requests arrive. The
/// first arrives at 0; with `rate` `None` (infinite) they all do. Gaps have
/// mean `1 / rate` whatever the burstiness (gamma with shape `burstiness` and
/// scale `1 / (rate * burstiness)`).
pub fn arrival_offsets(
    n: usize,
    rate: Option<f64>,
    burstiness: f64,
    seed: u64,
) -> Result<Vec<Duration>> {
    if !(burstiness > 0.0 && burstiness.is_finite()) {
        return Err(BenchError::Usage(format!(
            "--burstiness must be a positive number, not {burstiness}"
        )));
    }
    let Some(rate) = rate else {
        return Ok(vec![Duration::ZERO; n]);
    };
    if !(rate > 0.0 && rate.is_finite()) {
        return Err(BenchError::Usage(format!(
            "--request-rate must be positive or inf, not {rate}"
        )));
    }
    let gamma = Gamma::new(burstiness, 1.0 / (rate * burstiness))
        .map_err(|e| BenchError::Usage(format!("arrival distribution: {e}")))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut at = 0.0f64;
    let mut offsets = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 {
            at += gamma.sample(&mut rng);
        }
        offsets.push(Duration::from_secs_f64(at));
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps(offsets: &[Duration]) -> Vec<f64> {
        offsets
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect()
    }

    fn mean_and_cv(g: &[f64]) -> (f64, f64) {
        let mean = g.iter().sum::<f64>() / g.len() as f64;
        let var = g.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / g.len() as f64;
        (mean, var.sqrt() / mean)
    }

    #[test]
    fn infinite_rate_sends_everything_at_once() {
        let o = arrival_offsets(5, None, 1.0, 0).unwrap();
        assert_eq!(o, vec![Duration::ZERO; 5]);
    }

    #[test]
    fn schedules_are_seeded_and_increasing() {
        let a = arrival_offsets(200, Some(10.0), 1.0, 7).unwrap();
        assert_eq!(a, arrival_offsets(200, Some(10.0), 1.0, 7).unwrap());
        assert_ne!(a, arrival_offsets(200, Some(10.0), 1.0, 8).unwrap());
        assert_eq!(a[0], Duration::ZERO);
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn gaps_have_the_rate_and_the_burstiness_asked_for() {
        // 20000 gaps from a fixed seed: deterministic, and far inside the
        // tolerances (the sample mean's relative error is ~1/sqrt(20000)).
        let poisson = gaps(&arrival_offsets(20_001, Some(4.0), 1.0, 1).unwrap());
        let (mean, cv) = mean_and_cv(&poisson);
        assert!((mean - 0.25).abs() < 0.01, "mean gap {mean}");
        assert!(
            (cv - 1.0).abs() < 0.05,
            "exponential gaps have cv 1, got {cv}"
        );
        // Gamma with shape k has cv 1/sqrt(k): bursty (k = 0.25) -> 2, even (k = 4) -> 0.5.
        let bursty = gaps(&arrival_offsets(20_001, Some(4.0), 0.25, 1).unwrap());
        let (mean, cv) = mean_and_cv(&bursty);
        assert!(
            (mean - 0.25).abs() < 0.02 && (cv - 2.0).abs() < 0.15,
            "{mean} {cv}"
        );
        let even = gaps(&arrival_offsets(20_001, Some(4.0), 4.0, 1).unwrap());
        let (_, cv) = mean_and_cv(&even);
        assert!((cv - 0.5).abs() < 0.05, "{cv}");
    }

    #[test]
    fn bad_settings_are_errors() {
        assert!(arrival_offsets(3, Some(1.0), 0.0, 0).is_err());
        assert!(arrival_offsets(3, Some(-1.0), 1.0, 0).is_err());
        assert!(arrival_offsets(3, None, f64::NAN, 0).is_err());
    }
}
