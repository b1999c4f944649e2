//! Payload logging end to end: a server in-process over a tiny random model
//! logs to a CloudEvents receiver on loopback and to a file; sinks that
//! refuse connections or hang never fail a request, and their drops are
//! counted.

#[path = "common/mod.rs"]
mod common;
#[path = "model_repository/tiny.rs"]
mod tiny;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tessera_server::monitoring::payload::{Mode, Sink};
use tessera_server::monitoring::PayloadLogConfig;
use tessera_server::{AppState, ServerConfig};

/// A server over the tiny model as `tiny` version 1, logging to `sinks`.
fn start(dir: &std::path::Path, sinks: Vec<Sink>, queue_size: usize) -> SocketAddr {
    tiny::write(&dir.join("model"), 7);
    let models = common::models();
    common::register_path(
        &models,
        "tiny",
        &dir.join("model"),
        &common::engine_args("16MiB", 4096),
    );
    let state = AppState::new(
        models,
        ServerConfig {
            api_keys: vec!["sk-payload-test".into()],
            payload_log: PayloadLogConfig {
                sinks,
                mode: Mode::All,
                queue_size,
                ..PayloadLogConfig::default()
            },
            ..ServerConfig::default()
        },
    )
    .expect("config");
    state.set_ready(true);
    common::serve_state(state, None)
}

/// One request the receiver got: lower-cased headers and the body.
struct Received {
    headers: HashMap<String, String>,
    body: Value,
}

/// A CloudEvents receiver on loopback answering 200 to everything.
fn receiver() -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().expect("clone"));
            let mut headers = HashMap::new();
            let mut line = String::new();
            reader.read_line(&mut line).expect("request line");
            assert!(line.starts_with("POST /events HTTP/1.1"), "{line}");
            loop {
                line.clear();
                reader.read_line(&mut line).expect("header");
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                let (k, v) = l.split_once(':').expect("header line");
                headers.insert(k.to_ascii_lowercase(), v.trim().to_string());
            }
            let len: usize = headers["content-length"].parse().expect("length");
            let mut body = vec![0; len];
            reader.read_exact(&mut body).expect("body");
            let body = serde_json::from_slice(&body).expect("JSON body");
            sink.lock().unwrap().push(Received { headers, body });
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        }
    });
    (addr, got)
}

fn post(addr: SocketAddr, id: &str, body: &Value) -> common::Response {
    common::request_with(
        addr,
        "POST",
        "/v1/completions",
        &[
            ("Authorization", "Bearer sk-payload-test"),
            ("x-request-id", id),
        ],
        body.to_string().as_bytes(),
    )
}

#[test]
fn events_reach_a_cloudevents_receiver_and_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (recv_addr, got) = receiver();
    let file = dir.path().join("logs").join("payload.jsonl");
    let addr = start(
        dir.path(),
        vec![
            Sink::Http(format!("http://{recv_addr}/events")),
            Sink::File(file.clone()),
        ],
        64,
    );
    let whole = json!({"model": "tiny", "prompt": "the cat sat", "max_tokens": 3});
    assert_eq!(post(addr, "req-whole", &whole).status, 200);
    let streamed = json!({"model": "tiny", "prompt": "a dog ran", "max_tokens": 3, "stream": true});
    assert_eq!(post(addr, "req-stream", &streamed).status, 200);
    common::wait_for("four events", Duration::from_secs(20), || {
        got.lock().unwrap().len() >= 4
    });

    let got = got.lock().unwrap();
    let find = |id: &str, kind: &str| {
        got.iter()
            .find(|r| r.headers["ce-id"] == id && r.headers["ce-type"].ends_with(kind))
            .unwrap_or_else(|| panic!("no {kind} event for {id}"))
    };
    for id in ["req-whole", "req-stream"] {
        for kind in ["inference.request", "inference.response"] {
            let r = find(id, kind);
            assert_eq!(r.headers["ce-specversion"], "1.0");
            assert_eq!(r.headers["ce-source"], "tessera");
            assert_eq!(r.headers["ce-type"], format!("org.kubeflow.serving.{kind}"));
            assert_eq!(r.headers["ce-inferenceservicename"], "tiny");
            assert_eq!(r.headers["ce-modelversion"], "1");
            assert_eq!(r.headers["ce-endpoint"], "/v1/completions");
            assert_eq!(r.headers["content-type"], "application/json");
            assert!(r.headers.contains_key("ce-time"));
            let all = format!("{:?} {}", r.headers, r.body);
            assert!(
                !all.contains("sk-payload-test"),
                "a credential was logged: {all}"
            );
        }
    }
    assert_eq!(find("req-whole", "request").body, whole);
    let response = &find("req-whole", "response").body;
    assert_eq!(response["usage"]["completion_tokens"], 3, "{response}");
    assert_eq!(
        find("req-whole", "response").headers["ce-statuscode"],
        "200"
    );
    let chunks = find("req-stream", "response")
        .body
        .as_array()
        .expect("chunks")
        .clone();
    assert!(chunks.len() >= 3, "{chunks:?}");
    assert!(
        chunks.iter().all(|c| c["object"] == "text_completion"),
        "{chunks:?}"
    );

    common::wait_for("four lines", Duration::from_secs(20), || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.lines().count() >= 4)
    });
    let text = std::fs::read_to_string(&file).expect("file");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 4);
    assert!(lines.iter().any(|l| l["id"] == "req-whole"
        && l["type"] == "org.kubeflow.serving.inference.request"
        && l["body"] == whole
        && l["model"] == "tiny"
        && l["version"] == 1));

    // The log makes a drift baseline.
    let baseline = dir.path().join("baseline.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["drift", "baseline", "--from"])
        .arg(&file)
        .arg("-o")
        .arg(&baseline)
        .output()
        .expect("tessera runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = tessera_server::monitoring::Baseline::load(&baseline).expect("baseline");
    assert_eq!(b.model, "tiny");
    assert_eq!(
        b.signals["completion_tokens"],
        vec![3.0],
        "the whole response's"
    );
    assert_eq!(b.signals["finish_reason"].len(), 2, "both responses'");
}

#[test]
fn refusing_and_hanging_sinks_leave_serving_alone_and_count_drops() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens on a port just released: connections are refused.
    let refused = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    // This one accepts connections and never answers.
    let hanging = TcpListener::bind("127.0.0.1:0").expect("bind");
    let hanging_addr = hanging.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in hanging.incoming() {
            held.push(conn);
        }
    });
    let refused_sink = format!("http://{refused}/events");
    let hanging_sink = format!("http://{hanging_addr}/events");
    let addr = start(
        dir.path(),
        vec![
            Sink::Http(refused_sink.clone()),
            Sink::Http(hanging_sink.clone()),
        ],
        2,
    );
    for i in 0..20 {
        let body = json!({"model": "tiny", "prompt": "the sun", "max_tokens": 2});
        let r = post(addr, &format!("r-{i}"), &body);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let dropped = |sink: &str| -> f64 {
        let text = common::request_with(
            addr,
            "GET",
            "/metrics",
            &[("Authorization", "Bearer sk-payload-test")],
            b"",
        )
        .text();
        text.lines()
            .filter(|l| {
                l.starts_with("tessera_payload_log_dropped_total{")
                    && l.contains(&format!("sink=\"{sink}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // 40 events into queues of 2 that drain slowly or not at all.
    assert!(dropped(&refused_sink) > 0.0);
    assert!(dropped(&hanging_sink) >= 30.0, "{}", dropped(&hanging_sink));
}
