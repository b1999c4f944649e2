//! The models' lifecycle as metrics: each version's state and memory (read
//! from the manager at each scrape), and what the manager did (counted from
//! its events as they happen): loads and their durations, failures, swaps,
//! unloads by cause, evictions, mirrored requests.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use tessera_manager::{ManagerEvent, ModelState, UnloadCause};

use super::engine::register;
use crate::registry::ModelManager;

/// Loading takes from well under a second (a small model, warm page cache)
/// to minutes (tens of GB from a network disk).
const LOAD_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Lifecycle metrics.
pub struct LifecycleMetrics {
    state: IntGaugeVec,
    resident: IntGaugeVec,
    budget: IntGaugeVec,
    load_seconds: HistogramVec,
    load_failures: IntCounterVec,
    swaps: IntCounterVec,
    unloads: IntCounterVec,
    evictions: IntCounterVec,
    mirrored: IntCounterVec,
}

impl LifecycleMetrics {
    /// Registers the lifecycle metrics in `r`.
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(r, IntCounterVec::new(Opts::new(name, help), labels)?)
        };
        Ok(Self {
            state: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "model_state",
                        "1 for the state each model version is in (loading, ready, draining, unloading, unavailable, failed), else 0.",
                    ),
                    &["model", "version", "state"],
                )?,
            )?,
            resident: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "model_resident_bytes",
                        "Bytes of the memory budget a model version holds (weights and KV cache).",
                    ),
                    &["model", "version"],
                )?,
            )?,
            budget: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "model_memory_budget_bytes",
                        "The memory budget every loaded model shares: its total, and what is reserved.",
                    ),
                    &["kind"],
                )?,
            )?,
            load_seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "model_load_duration_seconds",
                        "Time from a load's start to the version being servable (weights read, KV cache set up, warm-up step run).",
                    )
                    .buckets(LOAD_BUCKETS.to_vec()),
                    &["model"],
                )?,
            )?,
            load_failures: counter(
                "model_load_failures_total",
                "Loads that failed (the versions serving stayed).",
                &["model"],
            )?,
            swaps: counter(
                "model_swaps_total",
                "Alias moves: swaps to another version and rollbacks.",
                &["model", "alias"],
            )?,
            unloads: counter(
                "model_unloads_total",
                "Versions taken out of service, by cause (requested, evicted, idle, policy).",
                &["model", "cause"],
            )?,
            evictions: counter(
                "model_evictions_total",
                "Idle versions unloaded to make room for a load.",
                &["model", "version"],
            )?,
            mirrored: counter(
                "mirrored_requests_total",
                "Copies of requests sent to a shadow version (answers discarded), by whether it accepted them.",
                &["model", "version", "outcome"],
            )?,
        })
    }

    /// Sets the per-version gauges from the manager.
    pub fn update(&self, models: &ModelManager) {
        self.state.reset();
        self.resident.reset();
        for v in models.versions() {
            let version = v.version.to_string();
            for state in ModelState::ALL {
                self.state
                    .with_label_values(&[&v.name, &version, state.as_str()])
                    .set(i64::from(state == v.state));
            }
            self.resident
                .with_label_values(&[&v.name, &version])
                .set(i64::try_from(v.resident_bytes).unwrap_or(i64::MAX));
        }
        let (total, used) = models.memory();
        for (kind, bytes) in [("total", total), ("reserved", used)] {
            self.budget
                .with_label_values(&[kind])
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// Counts one manager event.
    pub fn observe(&self, event: &ManagerEvent) {
        match event {
            ManagerEvent::Loaded { name, seconds, .. } => {
                self.load_seconds
                    .with_label_values(&[name])
                    .observe(*seconds);
            }
            ManagerEvent::LoadFailed { name, .. } => {
                self.load_failures.with_label_values(&[name]).inc();
            }
            ManagerEvent::Retired {
                name,
                version,
                cause,
            } => {
                self.unloads
                    .with_label_values(&[name, cause.as_str()])
                    .inc();
                if *cause == UnloadCause::Evicted {
                    self.evictions
                        .with_label_values(&[name, &version.to_string()])
                        .inc();
                }
            }
            ManagerEvent::AliasMoved { name, alias } => {
                self.swaps.with_label_values(&[name, alias]).inc();
            }
            ManagerEvent::Unloaded { .. } => {}
        }
    }

    /// Counts a request copied to a shadow version.
    pub fn mirrored(&self, model: &str, version: u64, accepted: bool) {
        let outcome = if accepted { "accepted" } else { "refused" };
        self.mirrored
            .with_label_values(&[model, &version.to_string(), outcome])
            .inc();
    }
}
