//! The engine's own counters and gauges, copied from its [`StatsSnapshot`]
//! at each scrape (the engine knows nothing of Prometheus).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use prometheus::{CounterVec, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use tessera_engine::engine::StatsSnapshot;

/// A model version's labels: name and version.
type Labels = (String, String);

/// Engine metrics, by model and version.
pub struct EngineMetrics {
    /// Each engine's stats at the last scrape: counters grow by the
    /// difference, and start over when a version is loaded again (a new
    /// engine counts from zero).
    last: Mutex<HashMap<Labels, StatsSnapshot>>,
    preemptions: IntCounterVec,
    prefix_cache_queries: IntCounterVec,
    prefix_cache_hits: IntCounterVec,
    steps: IntCounterVec,
    failed_requests: IntCounterVec,
    step_seconds: CounterVec,
    running: IntGaugeVec,
    waiting: IntGaugeVec,
    kv_usage: GaugeVec,
    kv_blocks: IntGaugeVec,
    last_step: GaugeVec,
}

/// Registers `metric` in `registry` and hands it back.
pub(super) fn register<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: T,
) -> prometheus::Result<T> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl EngineMetrics {
    /// Registers the engine metrics in `r`.
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        let model = &["model", "version"];
        let int_counter =
            |name: &str, help: &str| register(r, IntCounterVec::new(Opts::new(name, help), model)?);
        let int_gauge =
            |name: &str, help: &str| register(r, IntGaugeVec::new(Opts::new(name, help), model)?);
        Ok(Self {
            last: Mutex::default(),
            preemptions: int_counter(
                "preemptions_total",
                "Sequences preempted (their KV dropped, to be recomputed) for lack of KV blocks.",
            )?,
            prefix_cache_queries: int_counter(
                "prefix_cache_queries_total",
                "Prompt tokens looked up in the prefix cache at admission (whole blocks).",
            )?,
            prefix_cache_hits: int_counter(
                "prefix_cache_hits_total",
                "Prompt tokens found in the prefix cache at admission.",
            )?,
            steps: int_counter("engine_steps_total", "Engine steps run.")?,
            failed_requests: int_counter(
                "engine_failed_requests_total",
                "Requests the engine ended with an error of its own (model forward failed, \
                 malformed or non-finite logits, detokenization failed).",
            )?,
            step_seconds: register(
                r,
                CounterVec::new(
                    Opts::new("engine_step_seconds_total", "Time spent in engine steps."),
                    model,
                )?,
            )?,
            running: int_gauge(
                "requests_running",
                "Requests admitted by the engine and not finished.",
            )?,
            waiting: int_gauge(
                "requests_waiting",
                "Requests submitted and waiting for admission.",
            )?,
            kv_usage: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "kv_cache_usage_ratio",
                        "Fraction of KV-cache blocks held by sequences (0 to 1).",
                    ),
                    model,
                )?,
            )?,
            kv_blocks: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "kv_cache_blocks",
                        "KV-cache blocks by state: used (held by sequences) or free.",
                    ),
                    &["model", "version", "state"],
                )?,
            )?,
            last_step: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "engine_step_duration_seconds",
                        "How long the engine's latest step took.",
                    ),
                    model,
                )?,
            )?,
        })
    }

    /// Drops the gauges of versions no longer loaded (`live` are the ones
    /// that are); their counters stay, as counters do.
    pub fn retain(&self, live: &[Labels]) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let gone: Vec<Labels> = last.keys().filter(|k| !live.contains(k)).cloned().collect();
        for (model, version) in gone {
            last.remove(&(model.clone(), version.clone()));
            let labels = &[model.as_str(), version.as_str()];
            let _ = self.running.remove_label_values(labels);
            let _ = self.waiting.remove_label_values(labels);
            let _ = self.kv_usage.remove_label_values(labels);
            let _ = self.last_step.remove_label_values(labels);
            for state in ["used", "free"] {
                let _ =
                    self.kv_blocks
                        .remove_label_values(&[model.as_str(), version.as_str(), state]);
            }
        }
    }

    /// Brings the series of `version` of `model` up to `s`.
    pub fn update(&self, model: &str, version: &str, s: &StatsSnapshot) {
        let labels = &[model, version];
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let prev = last
            .insert((model.to_string(), version.to_string()), *s)
            .unwrap_or_default();
        // What the engine counted since the last scrape; all of it when the
        // engine is new (its counters went back to zero).
        let since = |now: u64, before: u64| if now >= before { now - before } else { now };
        for (counter, now, before) in [
            (&self.preemptions, s.preemptions, prev.preemptions),
            (
                &self.prefix_cache_queries,
                s.prefix_cache_queries,
                prev.prefix_cache_queries,
            ),
            (
                &self.prefix_cache_hits,
                s.prefix_cache_hits,
                prev.prefix_cache_hits,
            ),
            (&self.steps, s.steps, prev.steps),
            (
                &self.failed_requests,
                s.failed_requests,
                prev.failed_requests,
            ),
        ] {
            counter.with_label_values(labels).inc_by(since(now, before));
        }
        let step_nanos = since(s.step_nanos, prev.step_nanos);
        self.step_seconds
            .with_label_values(labels)
            .inc_by(step_nanos as f64 * 1e-9);
        let used = s.num_blocks.saturating_sub(s.free_blocks);
        let gauge = |g: &IntGaugeVec, labels: &[&str], v: u64| {
            g.with_label_values(labels)
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        gauge(&self.running, labels, s.running_requests);
        gauge(&self.waiting, labels, s.waiting_requests);
        gauge(&self.kv_blocks, &[model, version, "used"], used);
        gauge(&self.kv_blocks, &[model, version, "free"], s.free_blocks);
        let ratio = if s.num_blocks == 0 {
            0.0
        } else {
            used as f64 / s.num_blocks as f64
        };
        self.kv_usage.with_label_values(labels).set(ratio);
        self.last_step
            .with_label_values(labels)
            .set(s.last_step_nanos as f64 * 1e-9);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_follow_the_engine_and_gauges_are_set() {
        let r = Registry::new();
        let m = EngineMetrics::new(&r).expect("registers");
        let mut s = StatsSnapshot {
            preemptions: 3,
            failed_requests: 1,
            num_blocks: 10,
            free_blocks: 4,
            step_nanos: 2_000_000_000,
            ..StatsSnapshot::default()
        };
        m.update("a", "1", &s);
        s.preemptions = 5;
        m.update("a", "1", &s);
        assert_eq!(m.preemptions.with_label_values(&["a", "1"]).get(), 5);
        assert_eq!(m.failed_requests.with_label_values(&["a", "1"]).get(), 1);
        assert_eq!(m.kv_blocks.with_label_values(&["a", "1", "used"]).get(), 6);
        assert!((m.kv_usage.with_label_values(&["a", "1"]).get() - 0.6).abs() < 1e-9);
        assert!((m.step_seconds.with_label_values(&["a", "1"]).get() - 2.0).abs() < 1e-9);
        // Unloaded: its gauges go, its counters stay; loaded again, a new
        // engine counts from zero and the counter keeps growing.
        m.retain(&[]);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&r.gather())
            .expect("renders");
        assert!(!text.contains("kv_cache_usage_ratio{"), "{text}");
        m.update(
            "a",
            "1",
            &StatsSnapshot {
                preemptions: 2,
                ..StatsSnapshot::default()
            },
        );
        assert_eq!(m.preemptions.with_label_values(&["a", "1"]).get(), 7);
    }
}
