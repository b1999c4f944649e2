//! The engine's own counters and gauges, copied from its [`StatsSnapshot`]
//! at each scrape (the engine knows nothing of Prometheus).

use prometheus::{CounterVec, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use tessera_engine::engine::StatsSnapshot;

/// Engine metrics, by model.
pub struct EngineMetrics {
    preemptions: IntCounterVec,
    prefix_cache_queries: IntCounterVec,
    prefix_cache_hits: IntCounterVec,
    steps: IntCounterVec,
    step_seconds: CounterVec,
    running: IntGaugeVec,
    waiting: IntGaugeVec,
    kv_usage: GaugeVec,
    kv_blocks: IntGaugeVec,
    last_step: GaugeVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: T,
) -> prometheus::Result<T> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl EngineMetrics {
    /// Registers the engine metrics in `r`.
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        let model = &["model"];
        let int_counter =
            |name: &str, help: &str| register(r, IntCounterVec::new(Opts::new(name, help), model)?);
        let int_gauge =
            |name: &str, help: &str| register(r, IntGaugeVec::new(Opts::new(name, help), model)?);
        Ok(Self {
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
                    &["model", "state"],
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

    /// Brings `model`'s series up to `s`.
    pub fn update(&self, model: &str, s: &StatsSnapshot) {
        let labels = &[model];
        for (counter, value) in [
            (&self.preemptions, s.preemptions),
            (&self.prefix_cache_queries, s.prefix_cache_queries),
            (&self.prefix_cache_hits, s.prefix_cache_hits),
            (&self.steps, s.steps),
        ] {
            let c = counter.with_label_values(labels);
            // Counters only go up: add what the engine counted since the last scrape.
            c.inc_by(value.saturating_sub(c.get()));
        }
        let c = self.step_seconds.with_label_values(labels);
        let total = s.step_nanos as f64 * 1e-9;
        if total > c.get() {
            c.inc_by(total - c.get());
        }
        let used = s.num_blocks.saturating_sub(s.free_blocks);
        let gauge = |g: &IntGaugeVec, labels: &[&str], v: u64| {
            g.with_label_values(labels)
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        gauge(&self.running, labels, s.running_requests);
        gauge(&self.waiting, labels, s.waiting_requests);
        gauge(&self.kv_blocks, &[model, "used"], used);
        gauge(&self.kv_blocks, &[model, "free"], s.free_blocks);
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
            num_blocks: 10,
            free_blocks: 4,
            step_nanos: 2_000_000_000,
            ..StatsSnapshot::default()
        };
        m.update("a", &s);
        s.preemptions = 5;
        m.update("a", &s);
        assert_eq!(m.preemptions.with_label_values(&["a"]).get(), 5);
        assert_eq!(m.kv_blocks.with_label_values(&["a", "used"]).get(), 6);
        assert!((m.kv_usage.with_label_values(&["a"]).get() - 0.6).abs() < 1e-9);
        assert!((m.step_seconds.with_label_values(&["a"]).get() - 2.0).abs() < 1e-9);
    }
}
