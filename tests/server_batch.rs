//! Batch inference end to end against the real `tessera serve` process: the
//! OpenAI Python SDK over the Files and Batches APIs (outputs equal to the
//! same requests online, malformed input, limits, ownership, cancel), a
//! `kill -9` in the middle of a batch and a restart on the same data
//! directory, and a batch outliving its window.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const KEY: &str = "sk-batch-owner";
const OTHER_KEY: &str = "sk-batch-stranger";
const MAX_FILE_BYTES: u64 = 64 << 10;

/// Kills the server if a test fails before it is done with it.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tessera serve` on a free port over `data_dir` and waits for its
/// ready line.
fn start(data_dir: &Path, extra: &[&str]) -> (Server, SocketAddr) {
    let (server, addr, _) = start_counting(data_dir, extra);
    (server, addr)
}

/// [`start`], also counting the completions the server answered with 200
/// (from its request log lines).
fn start_counting(data_dir: &Path, extra: &[&str]) -> (Server, SocketAddr, Arc<AtomicUsize>) {
    let mut flags = vec!["--max-model-len", "2048", "--kv-cache-memory", "128MiB"];
    flags.extend_from_slice(extra);
    start_model(
        &Path::new(ROOT).join(common::DEFAULT_MODEL),
        "smol",
        data_dir,
        &flags,
    )
}

/// [`start_counting`] with another model.
fn start_model(
    model: &Path,
    name: &str,
    data_dir: &Path,
    extra: &[&str],
) -> (Server, SocketAddr, Arc<AtomicUsize>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "serve",
            "--port",
            "0",
            "--served-model-name",
            name,
            "--model",
        ])
        .arg(model)
        .args(["--api-key", KEY, "--api-key", OTHER_KEY])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--max-file-bytes", &MAX_FILE_BYTES.to_string()])
        .args(extra)
        .current_dir(ROOT)
        .stderr(Stdio::piped())
        .spawn()
        .expect("tessera serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let server = Server(child);
    let (tx, rx) = mpsc::channel();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[serve] {line}");
            if line.contains("request finished")
                && line.contains("route=/v1/completions")
                && line.contains("status=200")
            {
                count.fetch_add(1, Ordering::SeqCst);
            }
            if let Some(url) = line.split("ready at http://").nth(1) {
                let _ = tx.send(url.trim_end_matches("/v1").to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(180))
        .expect("the server reports ready");
    (server, addr.parse().expect("address"), answered)
}

/// A request with the owner's key.
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> common::Response {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body).expect("write body");
    common::read_response(BufReader::new(stream))
}

fn get_json(addr: SocketAddr, path: &str) -> Value {
    let r = call(addr, "GET", path, "application/json", b"");
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

/// Uploads `text` as a `batch` file (multipart, as the SDK sends it).
fn upload(addr: SocketAddr, text: &str) -> String {
    let boundary = "tessera-test-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\
         Content-Type: application/jsonl\r\n\r\n{text}\r\n--{boundary}--\r\n"
    );
    let r = call(
        addr,
        "POST",
        "/v1/files",
        &format!("multipart/form-data; boundary={boundary}"),
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["id"].as_str().expect("file id").to_string()
}

fn create_batch(addr: SocketAddr, file: &str, endpoint: &str) -> String {
    let body = json!({"input_file_id": file, "endpoint": endpoint, "completion_window": "24h"});
    let r = call(
        addr,
        "POST",
        "/v1/batches",
        "application/json",
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["id"].as_str().expect("batch id").to_string()
}

/// `n` completion lines slow enough to be caught midway.
fn slow_lines(n: usize) -> String {
    (0..n)
        .map(|i| {
            json!({"custom_id": format!("line-{i}"), "method": "POST", "url": "/v1/completions",
                   "body": {"model": "smol", "prompt": format!("Item {i}:"), "max_tokens": 40,
                            "ignore_eos": true, "temperature": 0}})
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Polls the batch until `done` says so.
fn poll(addr: SocketAddr, batch: &str, mut done: impl FnMut(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let b = get_json(addr, &format!("/v1/batches/{batch}"));
        if done(&b) {
            return b;
        }
        assert!(Instant::now() < deadline, "batch never got there: {b}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lines of a stored file.
fn file_lines(addr: SocketAddr, file: &Value) -> Vec<Value> {
    let Some(id) = file.as_str() else {
        return Vec::new();
    };
    let r = call(
        addr,
        "GET",
        &format!("/v1/files/{id}/content"),
        "application/json",
        b"",
    );
    assert_eq!(r.status, 200);
    r.text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Every custom id of the output and error files, with how often it appears.
fn custom_ids(addr: SocketAddr, batch: &Value) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for line in file_lines(addr, &batch["output_file_id"])
        .into_iter()
        .chain(file_lines(addr, &batch["error_file_id"]))
    {
        let id = line["custom_id"].as_str().expect("custom_id").to_string();
        *seen.entry(id).or_default() += 1;
    }
    seen
}

#[test]
fn the_openai_sdk_runs_batches_end_to_end() {
    let python = common::python();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (server, addr) = start(&data, &[]);
    let status = Command::new(python)
        .arg(Path::new(ROOT).join("tests/batch/check_batch_sdk.py"))
        .arg(format!("http://{addr}/v1"))
        .args([KEY, OTHER_KEY])
        .arg(&data)
        .arg(MAX_FILE_BYTES.to_string())
        .status()
        .expect("python runs");
    assert!(status.success(), "the SDK checks failed");
    drop(server);
}

#[test]
fn a_batch_killed_midway_resumes_with_one_output_line_per_input_line() {
    const LINES: usize = 16;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    const CONCURRENCY: usize = 2;
    let flags = ["--batch-concurrency", "2"];
    let (mut server, addr, ran_before) = start_counting(&data, &flags);
    let file = upload(addr, &slow_lines(LINES));
    let batch = create_batch(addr, &file, "/v1/completions");
    let midway = poll(addr, &batch, |b| {
        b["request_counts"]["completed"].as_u64() >= Some(3)
    });
    assert_eq!(midway["status"], "in_progress", "{midway}");
    server.0.kill().expect("kill -9");
    server.0.wait().expect("reaped");

    let (_server, addr, ran_after) = start_counting(&data, &flags);
    let resumed = get_json(addr, &format!("/v1/batches/{batch}"));
    let before = resumed["request_counts"]["completed"]
        .as_u64()
        .expect("count");
    assert!(
        before >= 3,
        "lines finished before the kill are kept: {resumed}"
    );
    let done = poll(addr, &batch, |b| b["status"] == "completed");
    assert_eq!(done["request_counts"]["total"], LINES);
    assert_eq!(done["request_counts"]["completed"], LINES);
    assert_eq!(done["error_file_id"], Value::Null, "{done}");
    let seen = custom_ids(addr, &done);
    let expected: BTreeMap<String, usize> = (0..LINES).map(|i| (format!("line-{i}"), 1)).collect();
    assert_eq!(seen, expected);
    // Lines recorded before the kill did not run again: the second process
    // ran exactly the rest, and only lines in flight at the kill (at most
    // the concurrency) ran twice in all.
    let (before_kill, after) = (
        ran_before.load(Ordering::SeqCst),
        ran_after.load(Ordering::SeqCst),
    );
    assert_eq!(after, LINES - before as usize, "{before_kill} then {after}");
    assert!(
        before_kill + after <= LINES + CONCURRENCY,
        "{before_kill} then {after}"
    );
}

#[test]
fn a_batch_past_its_window_expires_keeping_its_finished_lines() {
    const LINES: usize = 30;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (_server, addr) = start(&data, &["--batch-concurrency", "1", "--batch-window", "3s"]);
    let file = upload(addr, &slow_lines(LINES));
    let batch = create_batch(addr, &file, "/v1/completions");
    let done = poll(addr, &batch, |b| {
        ["completed", "expired", "failed"].contains(&b["status"].as_str().unwrap_or(""))
    });
    assert_eq!(done["status"], "expired", "{done}");
    assert!(done["expired_at"].is_u64());
    let errors = file_lines(addr, &done["error_file_id"]);
    assert!(!errors.is_empty());
    for e in &errors {
        assert_eq!(e["error"]["code"], "batch_expired", "{e}");
        assert_eq!(e["response"], Value::Null);
    }
    let finished = file_lines(addr, &done["output_file_id"]);
    assert_eq!(done["request_counts"]["completed"], finished.len());
    let seen = custom_ids(addr, &done);
    assert_eq!(seen.len(), LINES);
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
}

#[test]
fn run_batch_answers_every_line_offline_in_input_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    let lines: Vec<Value> = (0..4)
        .map(|i| {
            let (url, body) = if i % 2 == 0 {
                (
                    "/v1/completions",
                    json!({"model": "smol", "prompt": format!("Count {i}"), "max_tokens": 4}),
                )
            } else {
                (
                    "/v1/chat/completions",
                    json!({"model": "smol", "max_tokens": 4,
                    "messages": [{"role": "user", "content": format!("Hello {i}")}]}),
                )
            };
            json!({"custom_id": format!("r{i}"), "method": "POST", "url": url, "body": body})
        })
        .collect();
    let text: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(&input, text.join("\n")).expect("input");
    let run = |input: &Path| {
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args([
                "run-batch",
                "--no-progress",
                "--served-model-name",
                "smol",
                "--model",
            ])
            .arg(Path::new(ROOT).join(common::DEFAULT_MODEL))
            .args([
                "--max-model-len",
                "2048",
                "--kv-cache-memory",
                "64MiB",
                "-i",
            ])
            .arg(input)
            .arg("-o")
            .arg(&output)
            .output()
            .expect("run-batch runs")
    };
    let out = run(&input);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written: Vec<Value> = std::fs::read_to_string(&output)
        .expect("output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let ids: Vec<&str> = written
        .iter()
        .filter_map(|l| l["custom_id"].as_str())
        .collect();
    assert_eq!(ids, ["r0", "r1", "r2", "r3"]);
    for (line, object) in written
        .iter()
        .zip(["text_completion", "chat.completion"].iter().cycle())
    {
        assert_eq!(line["response"]["status_code"], 200, "{line}");
        assert_eq!(line["response"]["body"]["object"], *object, "{line}");
        assert_eq!(line["response"]["body"]["usage"]["completion_tokens"], 4);
    }

    std::fs::write(&input, format!("{}\n{{oops\n", text[0])).expect("input");
    let out = run(&input);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 2:") && stderr.contains("invalid_json_line"),
        "{stderr}"
    );
}

#[test]
fn an_embeddings_batch_gives_what_the_same_requests_give_online() {
    let dir = tempfile::tempdir().expect("tempdir");
    let minilm = Path::new(ROOT).join("models/all-MiniLM-L6-v2");
    // One line at a time, as the online requests run: the same batch shapes.
    let (_server, addr, _) = start_model(
        &minilm,
        "mini",
        &dir.path().join("data"),
        &["--batch-concurrency", "1"],
    );
    let bodies = [
        json!({"model": "mini", "input": ["a first sentence", "and a second one"]}),
        json!({"model": "mini", "input": "one more", "encoding_format": "base64"}),
    ];
    let lines: Vec<String> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            json!({"custom_id": format!("e{i}"), "method": "POST", "url": "/v1/embeddings",
                   "body": body})
            .to_string()
        })
        .collect();
    let file = upload(addr, &lines.join("\n"));
    let batch = create_batch(addr, &file, "/v1/embeddings");
    let done = poll(addr, &batch, |b| b["status"] == "completed");
    let outputs = file_lines(addr, &done["output_file_id"]);
    assert_eq!(outputs.len(), bodies.len());
    for (output, body) in outputs.iter().zip(&bodies) {
        let online = call(
            addr,
            "POST",
            "/v1/embeddings",
            "application/json",
            body.to_string().as_bytes(),
        );
        assert_eq!(online.status, 200);
        assert_eq!(output["response"]["status_code"], 200);
        assert_eq!(
            output["response"]["body"]["data"],
            online.json()["data"],
            "{output}"
        );
    }
}
