//! deploy/monitoring: the alert rules pass `promtool check rules`, and every
//! metric the dashboard and the rules name is one a server exposes (a server
//! in-process over a tiny model, with drift and a payload sink, after a few
//! requests so that every family has samples).

#[path = "common/mod.rs"]
mod common;
#[path = "model_repository/tiny.rs"]
mod tiny;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use tessera_server::monitoring::payload::Sink;
use tessera_server::monitoring::{DriftConfig, PayloadLogConfig};
use tessera_server::{AppState, ServerConfig};

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/monitoring");

fn promtool() -> Option<String> {
    let out = Command::new("promtool").arg("--version").output().ok()?;
    out.status.success().then(|| "promtool".to_string())
}

#[test]
fn alert_rules_pass_promtool() {
    let Some(promtool) = promtool() else {
        eprintln!(
            "skipped: promtool is not installed (Debian package prometheus; \
             scripts/test installs it when run as root)"
        );
        return;
    };
    let out = Command::new(promtool)
        .args(["check", "rules", &format!("{DEPLOY}/alerts.yml")])
        .output()
        .expect("promtool runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS: 4 rules found"), "{text}");
}

/// Every `tessera_*` name in `text`.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("tessera_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

/// The queries of the dashboard's panels and variables.
fn dashboard_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| dashboard_exprs(x, out)),
        _ => {}
    }
}

fn exposed(dir: &Path) -> BTreeSet<String> {
    tiny::write(&dir.join("model"), 3);
    let models = common::models();
    common::register_path(
        &models,
        "tiny",
        &dir.join("model"),
        &common::engine_args("16MiB", 4096),
    );
    let config = ServerConfig {
        drift: DriftConfig {
            reference_size: 4,
            window_size: 4,
            ..DriftConfig::default()
        },
        payload_log: PayloadLogConfig {
            sinks: vec![Sink::File(dir.join("payload.jsonl"))],
            // One slot: some events are dropped, so the drop family exists.
            queue_size: 1,
            ..PayloadLogConfig::default()
        },
        ..ServerConfig::default()
    };
    let state = AppState::new(models, config).expect("config");
    state.set_ready(true);
    let addr = common::serve_state(state, None);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..4 {
                    let body = json!({"model": "tiny", "prompt": "the cat", "max_tokens": 2});
                    assert_eq!(common::post(addr, "/v1/completions", &body).status, 200);
                }
            });
        }
    });
    let r = common::request(addr, "GET", "/v1/no-such-route-for-a-4xx", b"");
    assert_eq!(r.status, 404);
    let text = common::request(addr, "GET", "/metrics", b"").text();
    let mut out = BTreeSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or("");
        out.insert(name.to_string());
    }
    out
}

#[test]
fn every_metric_the_dashboard_and_rules_name_is_exposed() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{DEPLOY}/dashboard.json")).expect("dashboard.json"),
    )
    .expect("dashboard JSON");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");
    let rules = std::fs::read_to_string(format!("{DEPLOY}/alerts.yml")).expect("alerts.yml");
    let mut wanted = names(&exprs.join("\n"));
    // Only the rules' expressions: annotations may mention other words.
    for line in rules.lines() {
        let l = line.trim_start();
        if !(l.starts_with("summary") || l.starts_with("description") || l.starts_with('#')) {
            wanted.extend(names(l));
        }
    }
    for must in [
        "tessera_drift_psi",
        "tessera_drift_p_value",
        "tessera_drift_detected",
        "tessera_payload_log_dropped_total",
        "tessera_requests_waiting",
        "tessera_kv_cache_usage_ratio",
    ] {
        assert!(
            wanted.contains(must),
            "deploy/monitoring never names {must}"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let have = exposed(dir.path());
    let missing: Vec<&String> = wanted.iter().filter(|n| !have.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "named but not in /metrics: {missing:?}\nexposed: {have:?}"
    );
}
