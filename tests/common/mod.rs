//! Shared by the server tests: an in-process `tessera serve` over the default
//! model, and a small HTTP/1.1 client that hands back the raw bytes (so the
//! tests see exactly what goes over the wire).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tessera::engine_setup::{self, Compute, EngineArgs};
use tessera::serve::models::ServerLoader;
use tessera_engine::engine::EngineHandle;
use tessera_manager::{KeepAlive, ManagerSettings, ModelOptions, ModelSettings, ModelSpec};
use tessera_server::{AppState, ModelManager, ServerConfig};

/// The name the test server gives the default model.
pub const MODEL: &str = "smol";

/// The default model's file.
pub const DEFAULT_MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
);

/// A server running on its own runtime thread.
pub struct TestServer {
    pub addr: SocketAddr,
    pub engine: EngineHandle,
    pub models: Arc<ModelManager>,
}

/// Engine options small enough for CI: a 2048-token context and a modest KV pool.
pub fn engine_args(kv: &str, max_waiting: usize) -> EngineArgs {
    EngineArgs {
        model: Some(DEFAULT_MODEL.into()),
        max_model_len: Some(2048),
        kv_cache_memory: Some(engine_setup::parse_bytes(kv).expect("size")),
        kv_cache_dtype: Default::default(),
        max_num_batched_tokens: 512,
        max_num_seqs: 64,
        batch_max_running: None,
        batch_max_prefill_tokens: None,
        batch_with_interactive_prefill: false,
        no_prefix_caching: false,
        max_waiting_requests: max_waiting,
        threads: None,
        device: Default::default(),
        gpu_memory_utilization: 0.9,
        memory_budget: None,
    }
}

/// A manager on the CPU with room for every test's models, none evicted.
pub fn models() -> Arc<ModelManager> {
    models_with(ManagerSettings {
        memory_budget: 16 << 30,
        max_loaded_models: None,
        keep_alive: KeepAlive::Forever,
        autoload: true,
    })
}

/// A manager on the CPU with `settings`.
pub fn models_with(settings: ManagerSettings) -> Arc<ModelManager> {
    let loader = ServerLoader::new(Compute::cpu(), engine_args("64MiB", 4096).options());
    ModelManager::new(Box::new(loader), settings)
}

/// `args` as a model's settings (what model.toml would say).
pub fn settings_of(args: &EngineArgs) -> ModelSettings {
    let mut options = ModelOptions::new();
    let int = |v: usize| toml::Value::Integer(i64::try_from(v).expect("fits"));
    if let Some(len) = args.max_model_len {
        options.insert("max-model-len".into(), int(len));
    }
    if let Some(bytes) = args.kv_cache_memory {
        options.insert("kv-cache-memory".into(), toml::Value::Integer(bytes as i64));
    }
    options.insert(
        "max-waiting-requests".into(),
        int(args.max_waiting_requests),
    );
    options.insert("max-num-seqs".into(), int(args.max_num_seqs));
    options.insert(
        "max-num-batched-tokens".into(),
        int(args.max_num_batched_tokens),
    );
    ModelSettings {
        options,
        ..ModelSettings::default()
    }
}

/// Loads the default model as version 1 of `name` with `args` and returns
/// its engine.
pub fn register(models: &Arc<ModelManager>, name: &str, args: &EngineArgs) -> EngineHandle {
    let path = args.model.clone().expect("a model path");
    register_path(models, name, Path::new(&path), args)
}

/// Loads the model at `path` as version 1 of `name` with `args` and
/// returns its engine.
pub fn register_path(
    models: &Arc<ModelManager>,
    name: &str,
    path: &Path,
    args: &EngineArgs,
) -> EngineHandle {
    models.add_model(ModelSpec {
        name: name.into(),
        versions: [(1, path.to_path_buf())].into(),
        settings: settings_of(args),
    });
    models
        .load(name, Some(1))
        .expect("known")
        .wait_blocking()
        .expect("the default model loads (scripts/fetch-model)");
    models
        .resolve(Some(name), None)
        .expect("ready")
        .model
        .engine
        .clone()
}

/// Serves `models` on a free port in the background, ready.
pub fn serve(models: Arc<ModelManager>, max_body_bytes: usize) -> SocketAddr {
    serve_with(
        models,
        ServerConfig {
            max_body_bytes,
            ..ServerConfig::default()
        },
        None,
    )
}

/// Serves `models` with `config` (over TLS with `tls`) on a free port in
/// the background, ready.
pub fn serve_with(
    models: Arc<ModelManager>,
    config: ServerConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> SocketAddr {
    let state = AppState::new(models, config).expect("valid config");
    state.set_ready(true);
    serve_state(state, tls)
}

/// Serves `state` on a free port in the background.
pub fn serve_state(state: AppState, tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = std_listener.local_addr().expect("addr");
    std_listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
            tessera_server::serve(
                listener,
                tls,
                state,
                std::future::pending(),
                Duration::from_secs(1),
            )
            .await
            .expect("serves");
        });
    });
    addr
}

/// The default model as `MODEL`, ready, on a free port.
pub fn start() -> TestServer {
    let models = models();
    let engine = register(&models, MODEL, &engine_args("192MiB", 4096));
    let addr = serve(models.clone(), 1 << 20);
    TestServer {
        addr,
        engine,
        models,
    }
}

/// The Python of the tests' venv (scripts/python-env sets it up).
pub fn python() -> String {
    let out = std::process::Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/python-env"),
    )
    .stderr(std::process::Stdio::inherit())
    .output()
    .expect("scripts/python-env runs");
    assert!(out.status.success(), "scripts/python-env failed");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// A response: status, lower-cased headers and the body (de-chunked).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("utf-8 body")
    }
}

/// Opens a connection and sends a request; the reader is positioned at the
/// start of the response.
pub fn send(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> BufReader<TcpStream> {
    send_with(addr, method, path, &[], body)
}

/// The head of a request with `headers` beside the usual ones.
pub fn request_head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body_len: usize,
) -> String {
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         {extra}Content-Length: {body_len}\r\nConnection: close\r\n\r\n"
    )
}

/// [`send`] with extra headers.
pub fn send_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .expect("timeout");
    let head = request_head(addr, method, path, headers, body.len());
    stream.write_all(head.as_bytes()).expect("write head");
    stream.write_all(body).expect("write body");
    BufReader::new(stream)
}

/// Reads the status line and headers.
pub fn read_head<R: BufRead>(reader: &mut R) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').expect("header colon");
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    (status, headers)
}

/// Reads one chunk of a chunked body; `None` at the last (empty) chunk.
pub fn read_chunk<R: BufRead>(reader: &mut R) -> Option<Vec<u8>> {
    let mut line = String::new();
    reader.read_line(&mut line).expect("chunk size");
    let size = usize::from_str_radix(line.trim(), 16)
        .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
    let mut data = vec![0; size + 2];
    reader.read_exact(&mut data).expect("chunk data");
    assert_eq!(&data[size..], b"\r\n", "chunk not followed by CRLF");
    data.truncate(size);
    (size > 0).then_some(data)
}

/// A whole request and response.
pub fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Response {
    request_with(addr, method, path, &[], body)
}

/// [`request`] with extra headers.
pub fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    read_response(send_with(addr, method, path, headers, body))
}

/// Reads a whole response from `reader`.
pub fn read_response<R: BufRead>(mut reader: R) -> Response {
    let (status, headers) = read_head(&mut reader);
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        while let Some(chunk) = read_chunk(&mut reader) {
            body.extend(chunk);
        }
    } else if let Some((_, len)) = headers.iter().find(|(k, _)| k == "content-length") {
        let len: usize = len.parse().expect("content-length");
        body.resize(len, 0);
        reader.read_exact(&mut body).expect("body");
    } else {
        reader.read_to_end(&mut body).expect("body");
    }
    Response {
        status,
        headers,
        body,
    }
}

/// POSTs JSON.
pub fn post(addr: SocketAddr, path: &str, body: &Value) -> Response {
    request(addr, "POST", path, body.to_string().as_bytes())
}

/// Splits a raw SSE body into its events' `data` payloads, checking the
/// framing byte for byte: every event is `data: <payload>\n\n` (keep-alive
/// comments aside), the last is `[DONE]`, and nothing follows it.
pub fn sse_payloads(body: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(body).expect("SSE is UTF-8");
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "stream must end with [DONE]: {text:?}"
    );
    let mut payloads = Vec::new();
    for event in text.split_terminator("\n\n") {
        if event.starts_with(':') {
            continue; // keep-alive comment
        }
        let data = event
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("event without 'data: ': {event:?}"));
        assert!(!data.contains('\n'), "one data line per event: {event:?}");
        payloads.push(data.to_string());
    }
    assert_eq!(
        payloads.iter().filter(|p| *p == "[DONE]").count(),
        1,
        "exactly one [DONE]"
    );
    payloads
}

/// The chunks of a stream (every payload but `[DONE]`), parsed.
pub fn sse_chunks(body: &[u8]) -> Vec<Value> {
    let payloads = sse_payloads(body);
    payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).unwrap_or_else(|e| panic!("chunk is not JSON ({e}): {p}")))
        .collect()
}

/// The sorted keys of a JSON object.
pub fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

/// Polls `done` until it holds; fails the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
