//! Drift per model version: each signal's reference (the first requests
//! after the version went live) against a sliding current window, both
//! bounded buffers, so memory is fixed however long a version serves.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{GaugeVec, Opts, Registry};
use serde::Serialize;

use super::baseline::Baseline;
use super::signals::{bin_counts, Kind, Signal};
use super::stats::{chi_squared, ks_2samp, psi};

/// How drift is judged.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftConfig {
    /// Whether drift is tracked at all.
    pub enabled: bool,
    /// Values per signal in the reference window: the first ones after a
    /// version goes live.
    pub reference_size: usize,
    /// Values per signal in the current (sliding) window.
    pub window_size: usize,
    /// When set, the current window also holds only values this recent
    /// (the last T); `window_size` still bounds it.
    pub window_duration: Option<Duration>,
    /// PSI at or above which a signal may have drifted.
    pub psi_threshold: f64,
    /// Test p-value below which the move is significant.
    pub p_value_threshold: f64,
    /// References made offline, per model (`--drift-baseline`): a version
    /// of such a model starts with them as its reference.
    pub baselines: Vec<Baseline>,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            reference_size: 200,
            window_size: 200,
            window_duration: None,
            psi_threshold: 0.25,
            p_value_threshold: 0.05,
            baselines: Vec::new(),
        }
    }
}

/// A bounded sample of one signal.
#[derive(Debug, Default, Clone)]
struct Sample {
    values: VecDeque<f64>,
    /// When each value came (the current window only, for its age limit).
    times: VecDeque<Instant>,
}

impl Sample {
    /// Drops values beyond `max` or older than `max_age`, oldest first.
    fn trim(&mut self, max: usize, max_age: Option<Duration>, now: Instant) {
        while self.values.len() > max
            || max_age.is_some_and(|age| {
                self.times
                    .front()
                    .is_some_and(|&t| now.saturating_duration_since(t) > age)
            })
        {
            self.values.pop_front();
            self.times.pop_front();
        }
    }
}

/// One signal of one version.
#[derive(Debug, Default)]
struct SignalState {
    reference: Sample,
    current: Sample,
    /// Whether it was drifted at the last evaluation (a crossing is logged).
    drifted: bool,
}

/// One version's signals.
#[derive(Debug, Default)]
struct VersionState {
    signals: [SignalState; Signal::ALL.len()],
    observed: u64,
    /// Whether the reference came from a baseline file.
    from_baseline: bool,
}

/// A distribution in the report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Values in the window.
    pub count: usize,
    /// Their mean (numeric signals; for categories, of the category index).
    pub mean: Option<f64>,
    /// Counts per bin (numeric) or category, in the signal's order.
    pub bins: Vec<u64>,
}

/// One signal's comparison.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SignalReport {
    /// Its name.
    pub signal: &'static str,
    /// `ks` (numeric) or `chi_squared` (categorical).
    pub test: &'static str,
    /// The bin edges (numeric) or category names.
    pub bins: serde_json::Value,
    /// The reference window.
    pub reference: Summary,
    /// The current window.
    pub current: Summary,
    /// PSI of current against reference; `None` until the reference is full.
    pub psi: Option<f64>,
    /// The test's statistic.
    pub statistic: Option<f64>,
    /// The test's p-value.
    pub p_value: Option<f64>,
    /// The PSI threshold.
    pub psi_threshold: f64,
    /// The p-value threshold.
    pub p_value_threshold: f64,
    /// PSI at or above its threshold and p-value below its threshold.
    pub drifted: bool,
}

/// One version's comparison.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VersionReport {
    /// The model's name.
    pub model: String,
    /// The version.
    pub version: u64,
    /// Requests observed since it went live.
    pub observed: u64,
    /// `baseline` (a file made offline) or `live` (its first requests).
    pub reference_source: &'static str,
    /// Whether every signal's reference window is full (a signal's
    /// statistics exist once its own is).
    pub reference_complete: bool,
    /// Per signal.
    pub signals: Vec<SignalReport>,
}

/// Drift of every live version, with its gauges.
pub struct DriftMonitor {
    config: DriftConfig,
    versions: Mutex<HashMap<(String, u64), VersionState>>,
    psi: GaugeVec,
    p_value: GaugeVec,
    detected: GaugeVec,
}

/// What one request showed: `(signal, value)` pairs.
pub type Observation = Vec<(Signal, f64)>;

impl DriftMonitor {
    /// A monitor whose gauges are registered in `registry` (the server's,
    /// whose `tessera` prefix makes them `tessera_drift_*`).
    pub fn new(config: DriftConfig, registry: &Registry) -> prometheus::Result<Self> {
        let labels = &["model", "version", "signal"];
        let gauge = |name: &str, help: &str| -> prometheus::Result<GaugeVec> {
            let g = GaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        Ok(Self {
            psi: gauge(
                "drift_psi",
                "Population stability index of the current window against the reference.",
            )?,
            p_value: gauge(
                "drift_p_value",
                "p-value of the drift test (KS for numeric signals, chi-squared for categorical).",
            )?,
            detected: gauge(
                "drift_detected",
                "1 when the signal has drifted (PSI over its threshold and p-value under its).",
            )?,
            config,
            versions: Mutex::new(HashMap::new()),
        })
    }

    /// The settings.
    pub fn config(&self) -> &DriftConfig {
        &self.config
    }

    /// Records one request's values for `model` `version`.
    pub fn observe(&self, model: &str, version: u64, observation: &Observation) {
        if !self.config.enabled || observation.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut versions = self.lock();
        let key = (model.to_string(), version);
        let state = versions
            .entry(key)
            .or_insert_with(|| self.new_version(model));
        state.observed += 1;
        for &(signal, value) in observation {
            if !value.is_finite() {
                continue;
            }
            let s = &mut state.signals[signal.index()];
            if s.reference.values.len() < self.config.reference_size {
                s.reference.values.push_back(value);
            }
            s.current.values.push_back(value);
            s.current.times.push_back(now);
            s.current
                .trim(self.config.window_size, self.config.window_duration, now);
        }
        // Evaluating sorts two windows per signal: every few requests is
        // enough to notice a crossing promptly.
        let every = (self.config.window_size as u64 / 20).max(1);
        if state.observed.is_multiple_of(every) {
            self.evaluate(model, version, state);
        }
    }

    /// A version's state, its reference from the model's baseline if any.
    fn new_version(&self, model: &str) -> VersionState {
        let mut state = VersionState::default();
        if let Some(b) = self.config.baselines.iter().find(|b| b.model == model) {
            state.from_baseline = true;
            for s in Signal::ALL {
                let values = b.values(s, self.config.reference_size);
                state.signals[s.index()].reference.values.extend(values);
            }
        }
        state
    }

    /// Forgets versions that are no longer live, and their gauges.
    pub fn retain(&self, live: &[(String, u64)]) {
        let mut versions = self.lock();
        versions.retain(|(name, version), _| {
            let keep = live.iter().any(|(n, v)| n == name && v == version);
            if !keep {
                let version = version.to_string();
                for s in Signal::ALL {
                    let labels = [name.as_str(), version.as_str(), s.as_str()];
                    for g in [&self.psi, &self.p_value, &self.detected] {
                        let _ = g.remove_label_values(&labels);
                    }
                }
            }
            keep
        });
    }

    /// Every version's report, evaluated now (the gauges are set from the
    /// same numbers).
    pub fn report(&self) -> Vec<VersionReport> {
        let mut versions = self.lock();
        let mut out: Vec<VersionReport> = versions
            .iter_mut()
            .map(|((model, version), state)| self.evaluate(model, *version, state))
            .collect();
        out.sort_by(|a, b| (&a.model, a.version).cmp(&(&b.model, b.version)));
        out
    }

    /// Version `b`'s current window against version `a`'s (a canary against
    /// the stable one); `None` when either has not been observed.
    pub fn compare(&self, model: &str, a: u64, b: u64) -> Option<Vec<SignalReport>> {
        let versions = self.lock();
        let va = versions.get(&(model.to_string(), a))?;
        let vb = versions.get(&(model.to_string(), b))?;
        Some(
            Signal::ALL
                .into_iter()
                .map(|s| {
                    let (x, y) = (&va.signals[s.index()], &vb.signals[s.index()]);
                    self.compare_samples(s, &x.current, &y.current, true)
                })
                .collect(),
        )
    }

    fn evaluate(&self, model: &str, version: u64, state: &mut VersionState) -> VersionReport {
        // A quiet spell ages values out even without new requests.
        let now = Instant::now();
        for s in &mut state.signals {
            s.current
                .trim(self.config.window_size, self.config.window_duration, now);
        }
        // Signals only some requests show do not hold up completeness.
        let complete = Signal::ALL
            .into_iter()
            .filter(|s| !s.is_optional())
            .all(|s| state.signals[s.index()].reference.values.len() >= self.config.reference_size);
        let vlabel = version.to_string();
        let mut signals = Vec::with_capacity(Signal::ALL.len());
        for s in Signal::ALL {
            let st = &mut state.signals[s.index()];
            let full = st.reference.values.len() >= self.config.reference_size;
            let r = self.compare_samples(s, &st.reference, &st.current, full);
            if let (Some(psi), Some(p)) = (r.psi, r.p_value) {
                let labels = [model, vlabel.as_str(), s.as_str()];
                self.psi.with_label_values(&labels).set(psi);
                self.p_value.with_label_values(&labels).set(p);
                self.detected
                    .with_label_values(&labels)
                    .set(f64::from(u8::from(r.drifted)));
            }
            if r.drifted != st.drifted {
                st.drifted = r.drifted;
                if r.drifted {
                    tracing::warn!(
                        model,
                        version,
                        signal = s.as_str(),
                        psi = r.psi,
                        p_value = r.p_value,
                        "drift detected: the signal's current window has moved from its reference"
                    );
                } else {
                    tracing::info!(
                        model,
                        version,
                        signal = s.as_str(),
                        psi = r.psi,
                        p_value = r.p_value,
                        "drift cleared"
                    );
                }
            }
            signals.push(r);
        }
        VersionReport {
            model: model.to_string(),
            version,
            observed: state.observed,
            reference_source: if state.from_baseline {
                "baseline"
            } else {
                "live"
            },
            reference_complete: complete,
            signals,
        }
    }

    fn compare_samples(
        &self,
        signal: Signal,
        reference: &Sample,
        current: &Sample,
        ready: bool,
    ) -> SignalReport {
        let kind = signal.kind();
        let rc = bin_counts(kind, reference.values.iter().copied());
        let cc = bin_counts(kind, current.values.iter().copied());
        let ready = ready && !reference.values.is_empty() && !current.values.is_empty();
        let (test, bins, result) = match kind {
            Kind::Numeric(edges) => {
                let result = ready
                    .then(|| {
                        let r: Vec<f64> = reference.values.iter().copied().collect();
                        let c: Vec<f64> = current.values.iter().copied().collect();
                        ks_2samp(&r, &c)
                    })
                    .flatten();
                ("ks", serde_json::json!(edges), result)
            }
            Kind::Categorical(names) => {
                // One category on both sides has no test: identical, p = 1.
                let result = ready.then(|| {
                    chi_squared(&rc, &cc).unwrap_or(super::stats::TestResult {
                        statistic: 0.0,
                        p_value: 1.0,
                    })
                });
                ("chi_squared", serde_json::json!(names), result)
            }
        };
        let psi_value = ready.then(|| psi(&rc, &cc));
        let drifted = match (psi_value, result) {
            (Some(psi), Some(t)) => {
                psi >= self.config.psi_threshold && t.p_value < self.config.p_value_threshold
            }
            _ => false,
        };
        SignalReport {
            signal: signal.as_str(),
            test,
            bins,
            reference: summary(reference, rc),
            current: summary(current, cc),
            psi: psi_value,
            statistic: result.map(|t| t.statistic),
            p_value: result.map(|t| t.p_value),
            psi_threshold: self.config.psi_threshold,
            p_value_threshold: self.config.p_value_threshold,
            drifted,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u64), VersionState>> {
        self.versions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn summary(sample: &Sample, bins: Vec<u64>) -> Summary {
    let count = sample.values.len();
    let mean = (count > 0).then(|| sample.values.iter().sum::<f64>() / count as f64);
    Summary { count, mean, bins }
}

#[cfg(test)]
#[path = "drift_tests.rs"]
mod tests;
