//! `/v1/embeddings` end to end: all-MiniLM-L6-v2 served beside the default
//! chat model by one model manager, its vectors checked against the
//! independent NumPy reference (tests/fixtures/minilm-embeddings.json), every
//! input shape, base64, the length and `dimensions` errors, and each model
//! refusing the other kind's endpoint; then the official OpenAI SDK.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;

use base64::Engine as _;
use serde_json::{json, Value};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One server for every test: the embedding model `minilm` and the chat model `smol`.
fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let models = common::models();
        let args = common::engine_args("64MiB", 4096);
        let minilm = Path::new(ROOT).join("models/all-MiniLM-L6-v2");
        common::register_path(&models, "minilm", &minilm, &args);
        common::register_path(&models, "minilm-mrl", &matryoshka_copy(&minilm), &args);
        common::register(&models, "smol", &args);
        common::serve(models, 1 << 20)
    })
}

/// The same model marked as trained for shortened vectors (`is_matryoshka`
/// in config.json), its other files linked, in a fresh directory.
fn matryoshka_copy(dir: &Path) -> std::path::PathBuf {
    let copy = std::env::temp_dir().join(format!("tessera-minilm-mrl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(&copy).expect("mkdir");
    for entry in std::fs::read_dir(dir).expect("model dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_owned();
        if name == "config.json" {
            let mut config: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("config"))
                    .expect("JSON");
            config["is_matryoshka"] = json!(true);
            std::fs::write(copy.join(&name), config.to_string()).expect("config");
        } else {
            std::os::unix::fs::symlink(&path, copy.join(&name)).expect("link");
        }
    }
    copy
}

fn fixture() -> Vec<Value> {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("tests/fixtures/minilm-embeddings.json"))
            .expect("fixture");
    let json: Value = serde_json::from_str(&text).expect("JSON");
    json["cases"].as_array().expect("cases").clone()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("a list of floats")
        .iter()
        .map(|x| x.as_f64().expect("float") as f32)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

fn embed(body: Value) -> (u16, Value) {
    let r = common::post(server(), "/v1/embeddings", &body);
    (r.status, r.json())
}

fn vectors(response: &Value) -> Vec<Vec<f32>> {
    response["data"]
        .as_array()
        .expect("data")
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["object"], "embedding");
            assert_eq!(d["index"], i);
            floats(&d["embedding"])
        })
        .collect()
}

#[test]
fn text_inputs_match_the_reference_alone_and_batched() {
    let cases = fixture();
    let texts: Vec<&str> = cases
        .iter()
        .map(|c| c["text"].as_str().expect("text"))
        .collect();
    let (status, batched) = embed(json!({"model": "minilm", "input": texts}));
    assert_eq!(status, 200, "{batched}");
    assert_eq!(batched["object"], "list");
    assert_eq!(batched["model"], "minilm");
    let tokens: usize = cases
        .iter()
        .map(|c| c["token_ids"].as_array().expect("ids").len())
        .sum();
    assert_eq!(batched["usage"]["prompt_tokens"], tokens);
    assert_eq!(batched["usage"]["total_tokens"], tokens);
    let batched = vectors(&batched);
    for (case, vector) in cases.iter().zip(&batched) {
        let reference = floats(&case["embedding"]);
        let cos = cosine(vector, &reference);
        assert!(cos >= 0.9999, "{}: cosine {cos}", case["text"]);
        let (status, alone) = embed(json!({"model": "minilm", "input": case["text"]}));
        assert_eq!(status, 200);
        assert_eq!(&vectors(&alone)[0], vector, "alone and batched differ");
    }
}

#[test]
fn token_ids_and_base64_give_the_same_vectors() {
    let cases = fixture();
    let ids: Vec<&Value> = cases.iter().map(|c| &c["token_ids"]).collect();
    let texts: Vec<&Value> = cases.iter().map(|c| &c["text"]).collect();
    let (_, by_text) = embed(json!({"model": "minilm", "input": texts}));
    let (status, by_ids) = embed(json!({"model": "minilm", "input": ids}));
    assert_eq!(status, 200, "{by_ids}");
    assert_eq!(vectors(&by_ids), vectors(&by_text));
    let (status, one) = embed(json!({"model": "minilm", "input": cases[1]["token_ids"]}));
    assert_eq!(status, 200);
    assert_eq!(vectors(&one)[0], vectors(&by_text)[1]);
    let (status, b64) =
        embed(json!({"model": "minilm", "input": texts, "encoding_format": "base64"}));
    assert_eq!(status, 200);
    for (d, expected) in b64["data"]
        .as_array()
        .expect("data")
        .iter()
        .zip(vectors(&by_text))
    {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(d["embedding"].as_str().expect("a base64 string"))
            .expect("base64");
        let decoded: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(decoded, expected);
    }
}

#[test]
fn inputs_over_the_context_are_refused_by_index_or_truncated() {
    let long: Vec<u32> = std::iter::once(101)
        .chain(std::iter::repeat_n(2023, 299))
        .collect();
    let (status, body) = embed(json!({"model": "minilm", "input": [[101, 2023, 102], long]}));
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("input[1]") && message.contains("256"),
        "{message}"
    );
    assert_eq!(body["error"]["param"], "input");

    let (status, body) = embed(json!({
        "model": "minilm", "input": [[101, 2023, 102], long], "truncate_prompt_tokens": 10
    }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 3 + 10);
    // The last ten tokens are what runs.
    let (_, tail) = embed(json!({"model": "minilm", "input": [vec![2023; 10]]}));
    assert_eq!(vectors(&body)[1], vectors(&tail)[0]);

    let (status, body) =
        embed(json!({"model": "minilm", "input": "x", "truncate_prompt_tokens": 257}));
    assert_eq!(
        (status, body["error"]["param"].clone()),
        (400, json!("truncate_prompt_tokens"))
    );
}

#[test]
fn bad_parameters_are_named() {
    for (body, param) in [
        (
            json!({"model": "minilm", "input": "x", "dimensions": 64}),
            "dimensions",
        ),
        (
            json!({"model": "minilm", "input": "x", "encoding_format": "int8"}),
            "encoding_format",
        ),
        (json!({"model": "minilm", "input": []}), "input"),
        (json!({"model": "minilm", "input": ""}), "input"),
        (json!({"model": "minilm", "input": [1, "a"]}), "input"),
        (json!({"model": "minilm", "input": [[1], [40000]]}), "input"),
        (
            json!({"model": "minilm", "input": "x", "temperature": 1}),
            "temperature",
        ),
    ] {
        let (status, response) = embed(body.clone());
        assert_eq!(status, 400, "{body}: {response}");
        assert_eq!(response["error"]["param"], param, "{body}: {response}");
    }
}

#[test]
fn each_kind_refuses_the_other_kinds_endpoints() {
    let r = common::post(
        server(),
        "/v1/chat/completions",
        &json!({"model": "minilm", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 400);
    let message = r.json()["error"]["message"]
        .as_str()
        .expect("message")
        .to_string();
    assert!(message.contains("embedding model"), "{message}");
    let r = common::post(
        server(),
        "/v1/completions",
        &json!({"model": "minilm", "prompt": "hi"}),
    );
    assert_eq!(r.status, 400);
    let (status, body) = embed(json!({"model": "smol", "input": "hi"}));
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .expect("message")
        .contains("not an embedding model"));
    // The chat model still chats beside it.
    let r = common::post(
        server(),
        "/v1/chat/completions",
        &json!({"model": "smol", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn dimensions_shortens_and_renormalizes_for_a_matryoshka_model() {
    let (_, full) = embed(json!({"model": "minilm-mrl", "input": "The cat sits on the mat."}));
    let (status, short) = embed(
        json!({"model": "minilm-mrl", "input": "The cat sits on the mat.", "dimensions": 64}),
    );
    assert_eq!(status, 200, "{short}");
    let (full, short) = (&vectors(&full)[0], &vectors(&short)[0]);
    assert_eq!(short.len(), 64);
    let norm = full[..64]
        .iter()
        .map(|&x| f64::from(x).powi(2))
        .sum::<f64>()
        .sqrt();
    for (s, f) in short.iter().zip(&full[..64]) {
        assert!(
            (f64::from(*s) - f64::from(*f) / norm).abs() < 1e-6,
            "{s} vs {f} / {norm}"
        );
    }
    for bad in [0, 385] {
        let (status, body) = embed(json!({"model": "minilm-mrl", "input": "x", "dimensions": bad}));
        assert_eq!(
            (status, body["error"]["param"].clone()),
            (400, json!("dimensions"))
        );
    }
}

#[test]
fn embedding_requests_are_counted_in_the_request_metrics() {
    let (status, _) = embed(json!({"model": "minilm", "input": ["one", "two"]}));
    assert_eq!(status, 200);
    let r = common::request(server(), "GET", "/metrics", b"");
    let text = r.text();
    let finished = text
        .lines()
        .find(|l| {
            l.starts_with("tessera_requests_finished_total{")
                && l.contains("model=\"minilm\"")
                && l.contains("finish_reason=\"stop\"")
        })
        .unwrap_or_else(|| panic!("no finished-requests line for minilm in:\n{text}"));
    let count: f64 = finished
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("value");
    assert!(count >= 2.0, "{finished}");
}

#[test]
fn the_openai_sdk_reads_floats_and_base64() {
    let addr = server();
    let out = std::process::Command::new(common::python())
        .arg(Path::new(ROOT).join("tests/openai_sdk/check_embeddings.py"))
        .arg(format!("http://{addr}/v1"))
        .arg(Path::new(ROOT).join("tests/fixtures/minilm-embeddings.json"))
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
