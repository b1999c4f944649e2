//! Drift end to end: a server in-process over tiny random models; short
//! prompts, then long ones. The prompt length drifts, the completion length
//! (fixed `max_tokens`, EOS ignored) does not, and `/metrics` says what
//! `/v1/monitoring/drift` says. JSON outputs are watched on the default model.

#[path = "common/mod.rs"]
mod common;
#[path = "model_repository/tiny.rs"]
mod tiny;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_parse::{Scrape, Value as PromValue};
use serde_json::{json, Value};
use tessera_manager::ModelSpec;
use tessera_server::monitoring::DriftConfig;
use tessera_server::{AppState, ModelManager, ServerConfig};

/// Small windows keep the test quick on two cores.
const WINDOW: usize = 50;

fn start(dir: &std::path::Path) -> (SocketAddr, Arc<ModelManager>) {
    for v in [1, 2] {
        tiny::write(&dir.join(v.to_string()), v);
    }
    let models = common::models();
    models.add_model(ModelSpec {
        name: "tiny".into(),
        versions: [(1, dir.join("1")), (2, dir.join("2"))].into(),
        settings: common::settings_of(&common::engine_args("16MiB", 4096)),
    });
    for v in [1, 2] {
        models
            .load("tiny", Some(v))
            .expect("known")
            .wait_blocking()
            .expect("the tiny model loads");
    }
    let state = AppState::new(
        models.clone(),
        ServerConfig {
            drift: DriftConfig {
                reference_size: WINDOW,
                window_size: WINDOW,
                ..DriftConfig::default()
            },
            ..ServerConfig::default()
        },
    )
    .expect("config");
    state.set_ready(true);
    (common::serve_state(state, None), models)
}

/// `count` completions of `words`-word prompts on `model`, four at a time.
fn send(addr: SocketAddr, model: &str, words: usize, count: usize) {
    let vocab = ["the", "cat", "sat", "on", "a", "red", "mat", "and", "ran"];
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                for i in (t..count).step_by(4) {
                    let prompt: Vec<&str> = (0..words + i % 3)
                        .map(|w| vocab[(w + i) % vocab.len()])
                        .collect();
                    let body = json!({
                        "model": model, "prompt": prompt.join(" "),
                        "max_tokens": 4, "ignore_eos": true, "temperature": 0, "logprobs": 0,
                    });
                    let r = common::post(addr, "/v1/completions", &body);
                    assert_eq!(r.status, 200, "{}", r.text());
                }
            });
        }
    });
}

fn drift(addr: SocketAddr) -> Value {
    let r = common::request(addr, "GET", "/v1/monitoring/drift", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn version(report: &Value, v: u64) -> &Value {
    report["models"]
        .as_array()
        .expect("models")
        .iter()
        .find(|m| m["model"] == "tiny" && m["version"] == v)
        .unwrap_or_else(|| panic!("no tiny:{v} in {report}"))
}

fn signal<'a>(version: &'a Value, name: &str) -> &'a Value {
    version["signals"]
        .as_array()
        .expect("signals")
        .iter()
        .find(|s| s["signal"] == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

fn gauge(scrape: &Scrape, name: &str, signal: &str) -> f64 {
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == name
                && s.labels.get("model") == Some("tiny")
                && s.labels.get("version") == Some("1")
                && s.labels.get("signal") == Some(signal)
        })
        .map(|s| match s.value {
            PromValue::Gauge(v) => v,
            ref other => panic!("{name} is not a gauge: {other:?}"),
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {signal}: {found:?}");
    found[0]
}

#[test]
fn long_prompts_drift_and_fixed_completions_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, _models) = start(dir.path());

    send(addr, "tiny:1", 4, 200);
    common::wait_for("200 observations", Duration::from_secs(30), || {
        version(&drift(addr), 1)["observed"] == 200
    });
    let before = drift(addr);
    let v1 = version(&before, 1);
    assert_eq!(v1["reference_complete"], true);
    for s in ["prompt_tokens", "completion_tokens", "finish_reason"] {
        assert_eq!(signal(v1, s)["drifted"], false, "{s}: {}", signal(v1, s));
    }

    send(addr, "tiny:1", 100, 200);
    send(addr, "tiny:2", 4, WINDOW);
    common::wait_for("400 observations", Duration::from_secs(30), || {
        version(&drift(addr), 1)["observed"] == 400
    });
    let report = drift(addr);
    let text = common::request(addr, "GET", "/metrics", b"").text();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
    let v1 = version(&report, 1);
    let prompt = signal(v1, "prompt_tokens");
    assert_eq!(prompt["drifted"], true, "{prompt}");
    assert!(prompt["psi"].as_f64().unwrap() >= 0.25);
    assert!(prompt["p_value"].as_f64().unwrap() < 0.05);
    let completion = signal(v1, "completion_tokens");
    assert_eq!(completion["drifted"], false, "{completion}");
    assert_eq!(completion["current"]["mean"], 4.0);
    assert_eq!(signal(v1, "finish_reason")["drifted"], false);
    let logprob = signal(v1, "mean_logprob");
    assert_eq!(logprob["current"]["count"], WINDOW, "{logprob}");
    assert!(
        logprob["current"]["mean"].as_f64().unwrap() < 0.0,
        "{logprob}"
    );

    // The gauges are the JSON's numbers (to an ulp or so: serde_json's
    // default float parser does not always round-trip).
    for s in ["prompt_tokens", "completion_tokens", "finish_reason"] {
        let sig = signal(v1, s);
        for (gauge_name, field) in [
            ("tessera_drift_psi", "psi"),
            ("tessera_drift_p_value", "p_value"),
        ] {
            let (g, j) = (gauge(&scrape, gauge_name, s), sig[field].as_f64().unwrap());
            assert!(
                (g - j).abs() <= 1e-12 * j.abs(),
                "{gauge_name} {s}: {g} vs {j}"
            );
        }
        let detected = if sig["drifted"] == true { 1.0 } else { 0.0 };
        assert_eq!(gauge(&scrape, "tessera_drift_detected", s), detected, "{s}");
    }

    // Version 2 (short prompts) against version 1 (now long ones).
    let r = common::request(
        addr,
        "GET",
        "/v1/monitoring/compare?model=tiny&a=1&b=2",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let cmp = r.json();
    assert_eq!(signal(&cmp, "prompt_tokens")["drifted"], true, "{cmp}");
    assert_eq!(signal(&cmp, "completion_tokens")["drifted"], false, "{cmp}");
    let r = common::request(
        addr,
        "GET",
        "/v1/monitoring/compare?model=tiny&a=1&b=9",
        b"",
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let r = common::request(
        addr,
        "GET",
        "/v1/monitoring/compare?model=tiny&a=x&b=2",
        b"",
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

/// Requests asking for JSON feed `output_parses`: outputs the constraint
/// completed parse, outputs `max_tokens` cut short do not; requests that ask
/// for no JSON add nothing to it.
#[test]
fn json_outputs_that_parse_and_outputs_cut_short_are_counted() {
    let models = common::models();
    common::register(&models, "smol", &common::engine_args("64MiB", 4096));
    let state = AppState::new(
        models.clone(),
        ServerConfig {
            drift: DriftConfig {
                reference_size: 4,
                window_size: 10,
                ..DriftConfig::default()
            },
            ..ServerConfig::default()
        },
    )
    .expect("config");
    state.set_ready(true);
    let addr = common::serve_state(state, None);
    let ask = |max_tokens: u32, json: bool| {
        let mut body = json!({
            "model": "smol", "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "user", "content": "Give me a JSON object about a cat."}],
        });
        if json {
            // A small closed schema: greedy decoding completes it quickly.
            body["response_format"] = json!({"type": "json_schema", "json_schema": {
                "name": "cat", "schema": {
                    "type": "object", "additionalProperties": false, "required": ["name"],
                    "properties": {"name": {"type": "string", "maxLength": 12}}}}});
        }
        let r = common::post(addr, "/v1/chat/completions", &body);
        assert_eq!(r.status, 200, "{}", r.text());
        let v: Value = r.json();
        let content = v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .to_string();
        (
            content,
            v["choices"][0]["finish_reason"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        )
    };
    // Two that finish (the constraint completes well inside 200 tokens)...
    let mut parsed = 0;
    for _ in 0..2 {
        let (content, reason) = ask(200, true);
        if reason == "stop" {
            serde_json::from_str::<Value>(&content).expect("a completed JSON output parses");
            parsed += 1;
        }
    }
    assert!(parsed > 0, "no JSON output completed within 200 tokens");
    // ...three cut after 3 tokens, and two plain requests.
    for _ in 0..3 {
        let (content, reason) = ask(3, true);
        assert_eq!(reason, "length");
        assert!(
            serde_json::from_str::<Value>(&content).is_err(),
            "{content}"
        );
    }
    ask(8, false);
    ask(8, false);
    common::wait_for("7 observations", Duration::from_secs(30), || {
        drift(addr)["models"][0]["observed"] == 7
    });
    let report = drift(addr);
    let smol = &report["models"][0];
    let parses = signal(smol, "output_parses");
    assert_eq!(parses["bins"], json!(["parsed", "unparsed"]), "{parses}");
    assert_eq!(parses["current"]["count"], 5, "{parses}");
    assert_eq!(
        parses["current"]["bins"],
        json!([parsed, 5 - parsed]),
        "{parses}"
    );
}
