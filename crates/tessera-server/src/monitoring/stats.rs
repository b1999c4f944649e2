//! The drift statistics: population stability index over fixed bins, the
//! two-sample Kolmogorov–Smirnov test, Pearson's chi-squared test of a 2 x K
//! contingency table. Each equals SciPy's computation of the same quantity
//! (`tests/fixtures/drift_stats.json`, made by `scripts/drift-fixtures`).

/// The share a bin is given when it is empty on one side, so PSI stays
/// finite (the usual choice in PSI tables).
pub const PSI_EMPTY_SHARE: f64 = 1e-4;

/// Population stability index of `current` against `reference`, both counts
/// over the same bins: `sum (c - r) * ln(c / r)` over the bins' shares, an
/// empty bin's share raised to [`PSI_EMPTY_SHARE`]. 0 when either side is
/// empty (nothing to compare).
pub fn psi(reference: &[u64], current: &[u64]) -> f64 {
    let (nr, nc) = (
        reference.iter().sum::<u64>() as f64,
        current.iter().sum::<u64>() as f64,
    );
    if nr == 0.0 || nc == 0.0 {
        return 0.0;
    }
    reference
        .iter()
        .zip(current)
        .map(|(&r, &c)| {
            let r = (r as f64 / nr).max(PSI_EMPTY_SHARE);
            let c = (c as f64 / nc).max(PSI_EMPTY_SHARE);
            (c - r) * (c / r).ln()
        })
        .sum()
}

/// A test's statistic and p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestResult {
    /// The statistic (KS: the largest distance between the two empirical
    /// distribution functions; chi-squared: Pearson's sum).
    pub statistic: f64,
    /// The p-value under the hypothesis that both samples share a distribution.
    pub p_value: f64,
}

/// The two-sample Kolmogorov–Smirnov test, two-sided: SciPy's `ks_2samp`
/// statistic, and the p-value of its asymptotic method (the Kolmogorov
/// distribution at `sqrt(n m / (n + m)) D`, SciPy's `kstwobign.sf`). `None`
/// when a sample is empty.
pub fn ks_2samp(a: &[f64], b: &[f64]) -> Option<TestResult> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len() as f64, b.len() as f64);
    // Both empirical CDFs at every observed value (right-continuous), as
    // SciPy evaluates them: the supremum is reached at one of them.
    let mut d: f64 = 0.0;
    for &x in a.iter().chain(&b) {
        let fa = a.partition_point(|&v| v <= x) as f64 / n;
        let fb = b.partition_point(|&v| v <= x) as f64 / m;
        d = d.max((fa - fb).abs());
    }
    let en = n * m / (n + m);
    Some(TestResult {
        statistic: d,
        p_value: kolmogorov_sf(en.sqrt() * d),
    })
}

/// Survival function of the limiting Kolmogorov distribution,
/// `P(K > x) = 2 sum_{k>=1} (-1)^(k-1) exp(-2 k^2 x^2)`; below 0.82 through
/// the CDF's theta-function form, which converges there where the
/// alternating series does not (the cut-over SciPy's cephes uses).
pub fn kolmogorov_sf(x: f64) -> f64 {
    if x <= 0.0 || x.is_nan() {
        return 1.0;
    }
    if x < 0.82 {
        // CDF = sqrt(2 pi) / x * sum_{k>=1} exp(-(2k-1)^2 pi^2 / (8 x^2))
        let w = -std::f64::consts::PI.powi(2) / (8.0 * x * x);
        let mut sum = 0.0;
        for k in 1..100 {
            let j = (2 * k - 1) as f64;
            let term = (j * j * w).exp();
            sum += term;
            if term < sum * 1e-17 {
                break;
            }
        }
        let cdf = (2.0 * std::f64::consts::PI).sqrt() / x * sum;
        return (1.0 - cdf).clamp(0.0, 1.0);
    }
    let mut sum = 0.0;
    let mut sign = 1.0;
    for k in 1..100 {
        let k = k as f64;
        let term = (-2.0 * k * k * x * x).exp();
        sum += sign * term;
        if term < sum.abs() * 1e-17 {
            break;
        }
        sign = -sign;
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// Pearson's chi-squared test of independence of the 2 x K table whose rows
/// are `reference` and `current` (SciPy's `chi2_contingency` without Yates'
/// correction). Categories empty on both sides are left out; `None` when
/// either row is empty or fewer than two categories remain.
pub fn chi_squared(reference: &[u64], current: &[u64]) -> Option<TestResult> {
    let cols: Vec<(f64, f64)> = reference
        .iter()
        .zip(current)
        .filter(|(&r, &c)| r + c > 0)
        .map(|(&r, &c)| (r as f64, c as f64))
        .collect();
    let nr: f64 = cols.iter().map(|c| c.0).sum();
    let nc: f64 = cols.iter().map(|c| c.1).sum();
    if cols.len() < 2 || nr == 0.0 || nc == 0.0 {
        return None;
    }
    let total = nr + nc;
    let mut stat = 0.0;
    for &(r, c) in &cols {
        let col = r + c;
        let (er, ec) = (nr * col / total, nc * col / total);
        stat += (r - er).powi(2) / er + (c - ec).powi(2) / ec;
    }
    let dof = (cols.len() - 1) as f64;
    Some(TestResult {
        statistic: stat,
        p_value: gamma_q(dof / 2.0, stat / 2.0),
    })
}

/// The regularized upper incomplete gamma function `Q(a, x)`: the series
/// for `P` below `a + 1`, Lentz's continued fraction above (where `Q` may
/// be tiny and must keep its relative precision).
pub fn gamma_q(a: f64, x: f64) -> f64 {
    const EPS: f64 = 1e-17;
    const TINY: f64 = 1e-300;
    if x <= 0.0 {
        return 1.0;
    }
    let prefix = (a * x.ln() - x - ln_gamma(a)).exp();
    if x < a + 1.0 {
        let mut ap = a;
        let mut del = 1.0 / a;
        let mut sum = del;
        for _ in 0..10_000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * EPS {
                break;
            }
        }
        return (1.0 - sum * prefix).clamp(0.0, 1.0);
    }
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / TINY;
    let mut d = 1.0 / b;
    let mut h = d;
    for i in 1..10_000 {
        let an = -(i as f64) * (i as f64 - a);
        b += 2.0;
        d = an * d + b;
        if d.abs() < TINY {
            d = TINY;
        }
        c = b + an / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < EPS {
            break;
        }
    }
    (prefix * h).clamp(0.0, 1.0)
}

/// `ln Γ(a)` for `a > 0` (Lanczos, g = 7, nine terms: about 1e-15
/// relative).
fn ln_gamma(a: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if a < 0.5 {
        // Reflection keeps the series where it is accurate.
        let pi = std::f64::consts::PI;
        return (pi / (pi * a).sin()).ln() - ln_gamma(1.0 - a);
    }
    let a = a - 1.0;
    let mut x = C[0];
    for (i, &c) in C.iter().enumerate().skip(1) {
        x += c / (a + i as f64);
    }
    let t = a + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (a + 0.5) * t.ln() - t + x.ln()
}

#[cfg(test)]
#[path = "stats_tests.rs"]
mod tests;
