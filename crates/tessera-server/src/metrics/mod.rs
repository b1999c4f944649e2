//! Prometheus metrics, vLLM's set under a `tessera_` prefix, labelled by
//! model and version: request latencies and lengths observed as requests run
//! ([`crate::tracker`]), HTTP statuses, the engine's counters and gauges
//! read from its stats at each scrape ([`engine`]), and the models'
//! lifecycle: states, memory, loads, swaps, evictions ([`lifecycle`]).
//!
//! Each server has its own registry (no process-global state), so servers in
//! one process never mix their counts.

mod engine;
mod lifecycle;
mod vllm;

use std::sync::Mutex;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

use tessera_manager::ManagerEvent;

use crate::registry::ModelManager;

pub use engine::EngineMetrics;
pub use lifecycle::LifecycleMetrics;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latencies from a millisecond to half an hour: queueing, prefill and whole
/// requests on anything from a GPU with an idle queue to a loaded CPU.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1800.0,
];

/// Per-token latencies: finer below 100 ms, where decode steps are.
const TOKEN_LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15,
    0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0,
];

/// Token counts, 1-2-5 steps up to a million.
const LENGTH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0,
    50000.0, 100000.0, 200000.0, 500000.0, 1000000.0,
];

/// Metrics observed per request, by model and version.
pub struct RequestMetrics {
    pub time_to_first_token: HistogramVec,
    pub inter_token_latency: HistogramVec,
    pub time_per_output_token: HistogramVec,
    pub e2e_latency: HistogramVec,
    pub queue_time: HistogramVec,
    pub prefill_time: HistogramVec,
    pub decode_time: HistogramVec,
    pub inference_time: HistogramVec,
    pub prompt_length: HistogramVec,
    pub generation_length: HistogramVec,
    pub prompt_tokens: IntCounterVec,
    pub generation_tokens: IntCounterVec,
    /// By model and finish reason (stop, length, abort, error), one per choice.
    pub finished: IntCounterVec,
}

/// A server's metrics.
pub struct Metrics {
    registry: Registry,
    /// Observed per request.
    pub request: RequestMetrics,
    /// Responses by model (empty when none was resolved), route and status.
    pub http_requests: IntCounterVec,
    engine: EngineMetrics,
    lifecycle: LifecycleMetrics,
    /// Serializes scrapes: engine counters are brought up to date by adding
    /// the difference, which two scrapes at once would add twice.
    scrape: Mutex<()>,
    /// Also export the engine gauges under vLLM's names ([`vllm`]).
    vllm_names: bool,
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
) -> prometheus::Result<HistogramVec> {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        &["model", "version"],
    )?;
    registry.register(Box::new(h.clone()))?;
    Ok(h)
}

/// Registers a counter (`_total` is appended to `name`).
fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(format!("{name}_total"), help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// Every metric, registered in a fresh registry.
    pub fn new() -> prometheus::Result<Self> {
        let r = Registry::new_custom(Some("tessera".into()), None)?;
        let (lat, tok, len) = (LATENCY_BUCKETS, TOKEN_LATENCY_BUCKETS, LENGTH_BUCKETS);
        let request = RequestMetrics {
            time_to_first_token: histogram(
                &r,
                "time_to_first_token_seconds",
                "Time from receiving a request to its first generated token.",
                lat,
            )?,
            inter_token_latency: histogram(
                &r,
                "inter_token_latency_seconds",
                "Time between two consecutive tokens of one choice.",
                tok,
            )?,
            time_per_output_token: histogram(
                &r,
                "time_per_output_token_seconds",
                "Per finished choice: decode time over its tokens after the first.",
                tok,
            )?,
            e2e_latency: histogram(
                &r,
                "e2e_request_latency_seconds",
                "Time from receiving a request to its last token, per prompt.",
                lat,
            )?,
            queue_time: histogram(
                &r,
                "request_queue_time_seconds",
                "Time a request waited in the engine's queue before its first step.",
                lat,
            )?,
            prefill_time: histogram(
                &r,
                "request_prefill_time_seconds",
                "Time from a request's first step to its first token.",
                lat,
            )?,
            decode_time: histogram(
                &r,
                "request_decode_time_seconds",
                "Time from a request's first token to its last.",
                lat,
            )?,
            inference_time: histogram(
                &r,
                "request_inference_time_seconds",
                "Time from a request's first step to its last token (prefill plus decode).",
                lat,
            )?,
            prompt_length: histogram(
                &r,
                "request_prompt_tokens",
                "Prompt length of finished requests, in tokens.",
                len,
            )?,
            generation_length: histogram(
                &r,
                "request_generation_tokens",
                "Tokens generated by finished requests (all samples).",
                len,
            )?,
            prompt_tokens: counter(
                &r,
                "prompt_tokens",
                "Prompt tokens submitted.",
                &["model", "version"],
            )?,
            generation_tokens: counter(
                &r,
                "generation_tokens",
                "Tokens generated, streamed to clients or not.",
                &["model", "version"],
            )?,
            finished: counter(
                &r,
                "requests_finished",
                "Finished choices (one per prompt and sample) by finish reason.",
                &["model", "version", "finish_reason"],
            )?,
        };
        let http_requests = counter(
            &r,
            "http_requests",
            "HTTP responses by model (empty: none resolved), route and status.",
            &["model", "route", "status"],
        )?;
        let engine = EngineMetrics::new(&r)?;
        let lifecycle = LifecycleMetrics::new(&r)?;
        Ok(Self {
            registry: r,
            request,
            http_requests,
            engine,
            lifecycle,
            scrape: Mutex::new(()),
            vllm_names: true,
        })
    }

    /// Whether the engine gauges are also exported under vLLM's names (on
    /// unless `--no-vllm-metrics`).
    pub fn with_vllm_names(self, vllm_names: bool) -> Self {
        Self { vllm_names, ..self }
    }

    /// The registry, for metric families kept elsewhere (drift).
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The exposition text: the engines' stats and the models' states
    /// brought up to date first.
    pub fn render(&self, models: &ModelManager) -> Result<String, prometheus::Error> {
        let _one_at_a_time = self
            .scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ready = models.ready();
        let live: Vec<(String, String)> = ready
            .iter()
            .map(|(name, version, _)| (name.clone(), version.to_string()))
            .collect();
        self.engine.retain(&live);
        for ((name, version), (_, _, model)) in live.iter().zip(&ready) {
            self.engine.update(name, version, &model.engine.stats());
            self.touch(name, version);
        }
        self.lifecycle.update(models);
        let mut families = self.registry.gather();
        if self.vllm_names {
            families.extend(vllm::aliases(&families));
        }
        TextEncoder::new().encode_to_string(&families)
    }

    /// Counts what the model manager did (its observer).
    pub fn lifecycle(&self, event: &ManagerEvent) {
        self.lifecycle.observe(event);
    }

    /// Counts a copy of a request sent to a shadow version.
    pub fn mirrored(&self, model: &str, version: u64, accepted: bool) {
        self.lifecycle.mirrored(model, version, accepted);
    }

    /// Creates a version's request series, so that a scrape shows zeros for
    /// a model that has served nothing yet instead of leaving them out.
    fn touch(&self, model: &str, version: &str) {
        let labels = &[model, version];
        let r = &self.request;
        for h in [
            &r.time_to_first_token,
            &r.inter_token_latency,
            &r.time_per_output_token,
            &r.e2e_latency,
            &r.queue_time,
            &r.prefill_time,
            &r.decode_time,
            &r.inference_time,
            &r.prompt_length,
            &r.generation_length,
        ] {
            h.with_label_values(labels);
        }
        r.prompt_tokens.with_label_values(labels);
        r.generation_tokens.with_label_values(labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_with_buckets_and_model_labels() {
        let m = Metrics::new().expect("metrics");
        m.request
            .time_to_first_token
            .with_label_values(&["m", "2"])
            .observe(0.2);
        m.request
            .finished
            .with_label_values(&["m", "2", "stop"])
            .inc();
        let text = m
            .render(&crate::registry::tests::no_models())
            .expect("renders");
        assert!(text.contains(
            "tessera_time_to_first_token_seconds_bucket{model=\"m\",version=\"2\",le=\"0.25\"} 1"
        ));
        assert!(text.contains(
            "tessera_time_to_first_token_seconds_bucket{model=\"m\",version=\"2\",le=\"0.1\"} 0"
        ));
        assert!(text.contains(
            "tessera_requests_finished_total{finish_reason=\"stop\",model=\"m\",version=\"2\"} 1"
        ));
        assert!(text.contains("# TYPE tessera_time_to_first_token_seconds histogram"));
    }

    #[test]
    fn buckets_increase() {
        for b in [LATENCY_BUCKETS, TOKEN_LATENCY_BUCKETS, LENGTH_BUCKETS] {
            assert!(b.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
