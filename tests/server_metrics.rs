//! `GET /metrics` after a handful of requests: the output is Prometheus text
//! exposition, and its counters and histogram counts are exactly what was
//! sent (names, labels, values). `--metrics-key` protects it.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{post, request, request_with, sse_chunks, wait_for, MODEL};
use prometheus_parse::{LineInfo, Scrape, Value};
use serde_json::json;
use tessera_server::ServerConfig;

/// Fetches and parses `/metrics`, checking every line is exposition format.
fn scrape(addr: SocketAddr) -> Scrape {
    let r = request(addr, "GET", "/metrics", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    // vLLM-named aliases have colons, which this parser does not take; they
    // are checked by server_vllm_metrics.rs.
    for line in text
        .lines()
        .filter(|l| !l.contains(" vllm:") && !l.starts_with("vllm:"))
    {
        // The parser skips what it does not understand; nothing may be skipped.
        assert!(
            !matches!(LineInfo::parse(line), LineInfo::Ignored),
            "not exposition format: {line:?}"
        );
        if !line.starts_with('#') {
            assert!(line.starts_with("tessera_"), "unprefixed: {line}");
        }
    }
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
    // Every family is documented.
    for s in &scrape.samples {
        let family = ["_sum", "_count"]
            .iter()
            .find_map(|suffix| s.metric.strip_suffix(suffix))
            .filter(|f| scrape.docs.contains_key(*f))
            .unwrap_or(&s.metric);
        assert!(scrape.docs.contains_key(family), "no HELP for {}", s.metric);
    }
    scrape
}

/// The value of the sample `name` whose labels include `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{name} is not a scalar: {other:?}"),
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0]
}

/// A histogram's count, checked against its `+Inf` bucket.
fn histogram_count(scrape: &Scrape, name: &str) -> f64 {
    let count = value(scrape, &format!("{name}_count"), &[("model", MODEL)]);
    let buckets = scrape
        .samples
        .iter()
        .find_map(|s| match &s.value {
            Value::Histogram(b) if s.metric == name && s.labels.get("model") == Some(MODEL) => {
                Some(b.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no buckets for {name}"));
    let inf = buckets.last().expect("buckets");
    assert!(inf.less_than.is_infinite() && inf.count == count, "{name}");
    assert!(buckets.len() > 10, "{name}: LLM-sized buckets");
    assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));
    count
}

fn usage(v: &serde_json::Value) -> (f64, f64) {
    let u = &v["usage"];
    (
        u["prompt_tokens"].as_f64().expect("prompt_tokens"),
        u["completion_tokens"].as_f64().expect("completion_tokens"),
    )
}

#[test]
fn metrics_count_exactly_what_was_served() {
    let models = common::models();
    let engine = common::register(&models, MODEL, &common::engine_args("64MiB", 64));
    let addr = common::serve(models, 1 << 20);

    // A fresh server shows the model's series at zero.
    let s = scrape(addr);
    assert_eq!(
        histogram_count(&s, "tessera_time_to_first_token_seconds"),
        0.0
    );
    assert_eq!(
        value(&s, "tessera_prompt_tokens_total", &[("model", MODEL)]),
        0.0
    );

    let (mut prompt, mut generated) = (0.0, 0.0);
    // Two whole completions of 5 tokens.
    for text in ["The capital of France is", "One, two, three,"] {
        let r = post(
            addr,
            "/v1/completions",
            &json!({"prompt": text, "max_tokens": 5, "ignore_eos": true, "temperature": 0}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let (p, g) = usage(&r.json());
        assert_eq!(g, 5.0);
        prompt += p;
        generated += g;
    }
    // A streamed chat of 4 tokens.
    let r = post(
        addr,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
                "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}}),
    );
    assert_eq!(r.status, 200);
    let chunks = sse_chunks(&r.body);
    let (p, g) = usage(chunks.last().expect("usage chunk"));
    assert_eq!(g, 4.0);
    prompt += p;
    generated += g;
    // Two samples of 3 tokens from one prompt.
    let r = post(
        addr,
        "/v1/completions",
        &json!({"prompt": "Hello", "n": 2, "max_tokens": 3, "ignore_eos": true, "seed": 1}),
    );
    let (p, g) = usage(&r.json());
    assert_eq!(g, 6.0);
    prompt += p;
    generated += g;
    // A bad value (the model was resolved), a model list, an unknown route.
    let bad = post(
        addr,
        "/v1/completions",
        &json!({"prompt": "x", "temperature": -1}),
    );
    assert_eq!(bad.status, 400);
    assert_eq!(request(addr, "GET", "/v1/models", b"").status, 200);
    assert_eq!(request(addr, "GET", "/nope", b"").status, 404);

    let total = engine.stats().num_blocks;
    wait_for("the engine to go idle", Duration::from_secs(30), || {
        let s = engine.stats();
        s.free_blocks == total && s.running_requests == 0
    });
    let s = scrape(addr);
    let m = &[("model", MODEL)];
    assert_eq!(value(&s, "tessera_prompt_tokens_total", m), prompt);
    assert_eq!(value(&s, "tessera_generation_tokens_total", m), generated);
    // 2 + 1 + 2 choices, every one cut by max_tokens.
    let finished = |reason| {
        value(
            &s,
            "tessera_requests_finished_total",
            &[("model", MODEL), ("finish_reason", reason)],
        )
    };
    assert_eq!(finished("length"), 5.0);
    // Four engine requests (prompts) reached their first and last token.
    for h in [
        "tessera_time_to_first_token_seconds",
        "tessera_e2e_request_latency_seconds",
        "tessera_request_queue_time_seconds",
        "tessera_request_prefill_time_seconds",
        "tessera_request_decode_time_seconds",
        "tessera_request_inference_time_seconds",
        "tessera_request_prompt_tokens",
        "tessera_request_generation_tokens",
    ] {
        assert_eq!(histogram_count(&s, h), 4.0, "{h}");
    }
    assert_eq!(value(&s, "tessera_request_prompt_tokens_sum", m), prompt);
    assert_eq!(
        value(&s, "tessera_request_generation_tokens_sum", m),
        generated
    );
    // One gap per token after a choice's first: 2 x 4 + 3 + 2 x 2.
    assert_eq!(
        histogram_count(&s, "tessera_inter_token_latency_seconds"),
        15.0
    );
    // One per choice with more than one token.
    assert_eq!(
        histogram_count(&s, "tessera_time_per_output_token_seconds"),
        5.0
    );
    let http = |model, route, status| {
        value(
            &s,
            "tessera_http_requests_total",
            &[("model", model), ("route", route), ("status", status)],
        )
    };
    assert_eq!(http(MODEL, "/v1/completions", "200"), 3.0);
    assert_eq!(http(MODEL, "/v1/chat/completions", "200"), 1.0);
    assert_eq!(http(MODEL, "/v1/completions", "400"), 1.0);
    assert_eq!(http("", "/v1/models", "200"), 1.0);
    assert_eq!(http("", "unmatched", "404"), 1.0);
    // The two earlier scrapes count too.
    assert_eq!(http("", "/metrics", "200"), 1.0);

    // Engine series agree with the engine, and it is idle.
    let stats = engine.stats();
    assert_eq!(value(&s, "tessera_requests_running", m), 0.0);
    assert_eq!(value(&s, "tessera_requests_waiting", m), 0.0);
    assert_eq!(value(&s, "tessera_kv_cache_usage_ratio", m), 0.0);
    let blocks = |state| {
        value(
            &s,
            "tessera_kv_cache_blocks",
            &[("model", MODEL), ("state", state)],
        )
    };
    assert_eq!(
        (blocks("used"), blocks("free")),
        (0.0, stats.num_blocks as f64)
    );
    assert_eq!(
        value(&s, "tessera_preemptions_total", m),
        stats.preemptions as f64
    );
    let queries = value(&s, "tessera_prefix_cache_queries_total", m);
    assert_eq!(queries, stats.prefix_cache_queries as f64);
    assert_eq!(
        value(&s, "tessera_prefix_cache_hits_total", m),
        stats.prefix_cache_hits as f64
    );
    assert!(queries > 0.0, "the chat template's prompt spans a block");
    assert_eq!(
        value(&s, "tessera_engine_steps_total", m),
        stats.steps as f64
    );
    assert!(value(&s, "tessera_engine_step_duration_seconds", m) > 0.0);
}

#[test]
fn a_metrics_key_protects_metrics_and_api_keys_do_not_open_it() {
    let models = common::models();
    let addr = common::serve_with(
        models,
        ServerConfig {
            api_keys: vec!["sk-api".into()],
            metrics_key: Some("sk-metrics".into()),
            ..ServerConfig::default()
        },
        None,
    );
    let get = |auth: Option<&str>| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        request_with(addr, "GET", "/metrics", &headers, b"")
    };
    let r = get(None);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_eq!(get(Some("Bearer sk-api")).status, 401);
    let r = get(Some("Bearer sk-metrics"));
    assert_eq!(r.status, 200);
    assert!(r.text().contains("tessera_http_requests_total"));
    // The metrics key is not an API key either.
    let r = request_with(
        addr,
        "GET",
        "/v1/models",
        &[("Authorization", "Bearer sk-metrics")],
        b"",
    );
    assert_eq!(r.status, 401);
}
