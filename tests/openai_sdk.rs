//! End to end: the real `tessera serve` process on a free port with an API
//! key and a metrics key, its model from a config file's `[[models]]` table
//! with an alias, driven by the official OpenAI Python SDK (installed
//! into .venv by scripts/python-env; its `/metrics` check uses the official
//! Prometheus parser), then stopped with SIGTERM while a stream is in flight:
//! the stream finishes and the process exits 0.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{read_chunk, read_head, send_with};
use serde_json::json;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const MODEL_NAME: &str = "smol";
const API_KEY: &str = "sk-e2e-test";
const METRICS_KEY: &str = "sk-e2e-metrics";

/// Kills the server if the test fails before stopping it.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `tessera serve --port 0` and waits for its ready line, which carries
/// the address it bound.
fn start_server(config: &Path) -> (Server, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--port", "0", "--config"])
        .arg(config)
        .args(["--max-model-len", "2048", "--kv-cache-memory", "128MiB"])
        .args(["--shutdown-timeout", "60"])
        .args(["--api-key", API_KEY, "--metrics-key", METRICS_KEY])
        .current_dir(ROOT)
        .stderr(Stdio::piped())
        .spawn()
        .expect("tessera serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let server = Server(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[serve] {line}");
            if let Some(url) = line.split("ready at http://").nth(1) {
                let addr = url.trim_end_matches("/v1").to_string();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(180))
        .expect("the server reports ready");
    (server, addr.parse().expect("address"))
}

#[test]
fn the_openai_python_sdk_works_against_tessera_serve() {
    let python = common::python();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tessera.toml");
    std::fs::write(
        &config,
        format!(
            "[[models]]\nname = \"{MODEL_NAME}\"\npath = \"{ROOT}/models/SmolLM2-135M-Instruct.Q4_1.gguf\"\n\
             aliases = {{ prod = 1 }}\n"
        ),
    )
    .expect("config file");
    let (mut server, addr) = start_server(&config);

    let status = Command::new(&python)
        .arg(Path::new(ROOT).join("tests/openai_sdk/check_openai_sdk.py"))
        .arg(format!("http://{addr}/v1"))
        .arg(MODEL_NAME)
        .args([API_KEY, METRICS_KEY])
        .status()
        .expect("python runs");
    assert!(status.success(), "OpenAI SDK checks failed (see above)");

    // Graceful shutdown: SIGTERM mid-stream lets the stream finish.
    let body = json!({"model": MODEL_NAME, "prompt": "Count: 1, 2, 3,", "max_tokens": 24,
                      "ignore_eos": true, "temperature": 0, "stream": true});
    let auth = format!("Bearer {API_KEY}");
    let mut reader = send_with(
        addr,
        "POST",
        "/v1/completions",
        &[("Authorization", auth.as_str())],
        body.to_string().as_bytes(),
    );
    assert_eq!(read_head(&mut reader).0, 200);
    let first = read_chunk(&mut reader).expect("first chunk");
    assert!(first.starts_with(b"data: "));
    let kill = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let mut rest = Vec::new();
    while let Some(chunk) = read_chunk(&mut reader) {
        rest.extend(chunk);
    }
    let rest = String::from_utf8(rest).expect("utf-8");
    assert!(
        rest.ends_with("data: [DONE]\n\n"),
        "the in-flight stream completes: {rest}"
    );
    assert!(rest.contains("\"finish_reason\":\"length\""), "{rest}");

    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(status) = server.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "nothing listens after shutdown"
    );
}
