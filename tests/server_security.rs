//! API keys, rate limits (and recovery), stream limits, request limits, body
//! size, request timeout, request ids and CORS, over raw HTTP.

mod common;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{keys, read_chunk, read_head, request_with, send_with, wait_for, Response, MODEL};
use serde_json::{json, Value};
use tessera_engine::engine::EngineHandle;
use tessera_server::{Limits, ModelManager, RateLimitConfig, ServerConfig};

const KEY: &str = "sk-good";
const OTHER_KEY: &str = "sk-other";

/// The default model, shared by every server of this file.
fn model() -> &'static (Arc<ModelManager>, EngineHandle) {
    static MODEL_: OnceLock<(Arc<ModelManager>, EngineHandle)> = OnceLock::new();
    MODEL_.get_or_init(|| {
        let models = common::models();
        let engine = common::register(&models, MODEL, &common::engine_args("192MiB", 64));
        (models, engine)
    })
}

/// A server over the shared model with `config`.
fn server(config: ServerConfig) -> SocketAddr {
    common::serve_with(model().0.clone(), config, None)
}

fn with_keys(config: ServerConfig) -> ServerConfig {
    ServerConfig {
        api_keys: vec![KEY.into(), OTHER_KEY.into()],
        ..config
    }
}

fn call(addr: SocketAddr, method: &str, path: &str, key: Option<&str>, body: &Value) -> Response {
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    request_with(addr, method, path, &headers, &body)
}

/// Checks OpenAI's error shape and returns the error object.
fn error(r: &Response, status: u16) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(keys(&v), ["error"]);
    assert_eq!(keys(&v["error"]), ["code", "message", "param", "type"]);
    v["error"].clone()
}

fn completion(max_tokens: usize) -> Value {
    json!({"prompt": "Once upon a time", "max_tokens": max_tokens, "ignore_eos": true, "temperature": 0})
}

#[test]
fn api_keys_guard_everything_but_probes_and_metrics() {
    let addr = server(with_keys(ServerConfig::default()));
    let cmpl = "/v1/completions";
    let e = error(&call(addr, "POST", cmpl, None, &completion(2)), 401);
    assert!(e["message"].as_str().expect("message").contains("API key"));
    let e = error(
        &call(addr, "POST", cmpl, Some("sk-wrong"), &completion(2)),
        401,
    );
    assert_eq!(e["code"], "invalid_api_key");
    let r = call(addr, "POST", cmpl, Some("sk-goo"), &completion(2));
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    error(&r, 401);
    let r = call(addr, "POST", cmpl, Some(OTHER_KEY), &completion(2));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        call(addr, "GET", "/v1/models", Some(KEY), &Value::Null).status,
        200
    );
    error(&call(addr, "GET", "/v1/models", None, &Value::Null), 401);
    // Unknown paths do not reveal themselves without a key.
    error(&call(addr, "GET", "/v1/secret", None, &Value::Null), 401);
    for open in ["/health", "/ready", "/metrics"] {
        assert_eq!(
            call(addr, "GET", open, None, &Value::Null).status,
            200,
            "{open}"
        );
    }
}

#[test]
fn refused_requests_with_unread_bodies_close_their_connection() {
    let addr = server(with_keys(ServerConfig::default()));
    let body = completion(2).to_string();
    let stream = TcpStream::connect(addr).expect("connect");
    // Keep-alive: no `Connection: close` from the client.
    write!(
        &stream,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-bad\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let r = common::read_response(BufReader::new(&stream));
    assert_eq!((r.status, r.header("connection")), (401, Some("close")));
    // Without a body there is nothing left unread: the connection stays.
    let stream = TcpStream::connect(addr).expect("connect");
    write!(&stream, "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let r = common::read_response(BufReader::new(&stream));
    assert_eq!((r.status, r.header("connection")), (401, None));
}

#[test]
fn request_rate_limits_answer_429_and_recover_within_the_window() {
    // 2 requests per 2 s: a request's worth refills every second.
    let addr = server(with_keys(ServerConfig {
        rate_limit: RateLimitConfig {
            requests: Some(2),
            tokens: None,
            window: Duration::from_secs(2),
        },
        ..ServerConfig::default()
    }));
    let models = |key| call(addr, "GET", "/v1/models", Some(key), &Value::Null);
    assert_eq!(models(KEY).status, 200);
    assert_eq!(models(KEY).status, 200);
    let r = models(KEY);
    let e = error(&r, 429);
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("rate_limit_error"), Some("rate_limit_exceeded"))
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    // Limits are per key.
    assert_eq!(models(OTHER_KEY).status, 200);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        models(KEY).status,
        200,
        "one request refilled after Retry-After"
    );
    assert_eq!(models(KEY).status, 429);
    // Probes are never limited.
    assert_eq!(call(addr, "GET", "/health", None, &Value::Null).status, 200);
}

#[test]
fn token_rate_limits_count_prompt_and_output() {
    // 100 tokens per minute; "Once upon a time" is a few tokens.
    let addr = server(with_keys(ServerConfig {
        rate_limit: RateLimitConfig {
            requests: None,
            tokens: Some(100),
            window: Duration::from_secs(60),
        },
        ..ServerConfig::default()
    }));
    let cmpl = "/v1/completions";
    assert_eq!(
        call(addr, "POST", cmpl, Some(KEY), &completion(60)).status,
        200
    );
    let r = call(addr, "POST", cmpl, Some(KEY), &completion(60));
    error(&r, 429);
    let wait: u64 = r
        .header("retry-after")
        .expect("retry-after")
        .parse()
        .expect("secs");
    assert!((2..=60).contains(&wait), "{wait}");
    // More than the whole budget can never pass: a 400, not a retry loop.
    let e = error(
        &call(addr, "POST", cmpl, Some(OTHER_KEY), &completion(200)),
        400,
    );
    assert_eq!(e["code"], "rate_limit_exceeded");
    assert_eq!(
        call(addr, "POST", cmpl, Some(OTHER_KEY), &completion(20)).status,
        200
    );
}

#[test]
fn request_limits_have_clear_errors() {
    let addr = server(ServerConfig {
        max_body_bytes: 2048,
        limits: Limits {
            max_prompt_tokens: Some(40),
            max_n: 2,
            max_output_tokens: Some(16),
            ..Limits::default()
        },
        ..ServerConfig::default()
    });
    let cmpl = "/v1/completions";
    let long = json!({"prompt": "word ".repeat(60), "max_tokens": 1});
    let e = error(&call(addr, "POST", cmpl, None, &long), 400);
    assert_eq!(
        (e["param"].as_str(), e["code"].as_str()),
        (Some("prompt"), Some("prompt_too_long"))
    );
    let e = error(
        &call(addr, "POST", cmpl, None, &json!({"prompt": "Hi", "n": 3})),
        400,
    );
    assert_eq!(e["param"], "n");
    let e = error(
        &call(
            addr,
            "POST",
            cmpl,
            None,
            &json!({"prompt": "Hi", "max_tokens": 17}),
        ),
        400,
    );
    assert_eq!(
        (e["param"].as_str(), e["code"].as_str()),
        (Some("max_tokens"), Some("max_tokens_too_large"))
    );
    // Without max_tokens, chat gets the cap instead of the rest of the context.
    let chat = json!({"messages": [{"role": "user", "content": "Hi"}], "ignore_eos": true});
    let r = call(addr, "POST", "/v1/chat/completions", None, &chat);
    assert_eq!(r.json()["usage"]["completion_tokens"], 16, "{}", r.text());
    let big = json!({"prompt": "a".repeat(4000)});
    let e = error(&call(addr, "POST", cmpl, None, &big), 413);
    assert_eq!(e["code"], "request_too_large");
    // Also when bodies are logged (the body is read before the handler).
    let logged = server(ServerConfig {
        max_body_bytes: 2048,
        log_requests: true,
        ..ServerConfig::default()
    });
    let e = error(&call(logged, "POST", cmpl, None, &big), 413);
    assert_eq!(e["code"], "request_too_large");
    assert_eq!(call(logged, "POST", cmpl, None, &completion(2)).status, 200);
}

#[test]
fn streams_per_key_are_limited_and_given_back() {
    let addr = server(with_keys(ServerConfig {
        limits: Limits {
            max_streams_per_key: Some(1),
            ..Limits::default()
        },
        ..ServerConfig::default()
    }));
    // Long enough to be still running when the second stream is asked for.
    let mut body = completion(1000);
    body["stream"] = json!(true);
    let auth = format!("Bearer {KEY}");
    let headers = [("Authorization", auth.as_str())];
    let bytes = body.to_string();
    let mut first = send_with(addr, "POST", "/v1/completions", &headers, bytes.as_bytes());
    assert_eq!(read_head(&mut first).0, 200);
    assert!(read_chunk(&mut first).is_some());
    let e = error(
        &call(addr, "POST", "/v1/completions", Some(KEY), &body),
        429,
    );
    assert_eq!(e["code"], "too_many_streams");
    // Another key, and whole responses, are not affected.
    let mut other = send_with(
        addr,
        "POST",
        "/v1/completions",
        &[("Authorization", "Bearer sk-other")],
        bytes.as_bytes(),
    );
    assert_eq!(read_head(&mut other).0, 200);
    drop(other);
    assert_eq!(
        call(addr, "POST", "/v1/completions", Some(KEY), &completion(2)).status,
        200
    );
    // Leaving the stream gives the slot back.
    drop(first);
    wait_for("the slot to come back", Duration::from_secs(30), || {
        let mut short = completion(1);
        short["stream"] = json!(true);
        call(addr, "POST", "/v1/completions", Some(KEY), &short).status == 200
    });
}

#[test]
fn the_request_timeout_ends_whole_and_streamed_responses() {
    let (_, engine) = model();
    let addr = server(ServerConfig {
        limits: Limits {
            request_timeout: Some(Duration::from_millis(300)),
            ..Limits::default()
        },
        ..ServerConfig::default()
    });
    // Far more tokens than a CPU makes in 300 ms.
    let e = error(
        &call(addr, "POST", "/v1/completions", None, &completion(1500)),
        504,
    );
    assert_eq!(e["code"], "request_timeout");
    let mut body = completion(1500);
    body["stream"] = json!(true);
    let r = call(addr, "POST", "/v1/completions", None, &body);
    assert_eq!(r.status, 200);
    let payloads = common::sse_payloads(&r.body);
    let last_chunk: Value = serde_json::from_str(&payloads[payloads.len() - 2]).expect("json");
    assert_eq!(
        last_chunk["error"]["code"], "request_timeout",
        "{last_chunk}"
    );
    // Both generations were aborted: every KV block comes back.
    let total = engine.stats().num_blocks;
    wait_for("blocks to be freed", Duration::from_secs(30), || {
        engine.stats().free_blocks == total
    });
}

#[test]
fn request_ids_are_echoed_or_made_up() {
    let addr = server(ServerConfig::default());
    let r = request_with(addr, "GET", "/health", &[("X-Request-Id", "trace-42")], b"");
    assert_eq!(r.header("x-request-id"), Some("trace-42"));
    let r = request_with(addr, "GET", "/v1/models", &[], b"");
    let id = r.header("x-request-id").expect("made up");
    assert_eq!(id.len(), 24);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    // Errors carry it too.
    let r = request_with(addr, "GET", "/nope", &[("x-request-id", "e-1")], b"");
    assert_eq!((r.status, r.header("x-request-id")), (404, Some("e-1")));
}

#[test]
fn cors_is_off_by_default_and_allows_listed_origins() {
    let preflight = |addr, origin: &str| {
        request_with(
            addr,
            "OPTIONS",
            "/v1/chat/completions",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "authorization,content-type",
                ),
            ],
            b"",
        )
    };
    let off = server(ServerConfig::default());
    assert_eq!(
        preflight(off, "https://app.example").header("access-control-allow-origin"),
        None
    );
    let on = server(with_keys(ServerConfig {
        allowed_origins: vec!["https://app.example".into()],
        ..ServerConfig::default()
    }));
    // A preflight needs no key.
    let r = preflight(on, "https://app.example");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(r
        .header("access-control-allow-headers")
        .is_some_and(|h| h.contains("authorization")));
    assert_eq!(
        preflight(on, "https://evil.example").header("access-control-allow-origin"),
        None
    );
    let r = request_with(
        on,
        "GET",
        "/v1/models",
        &[
            ("Origin", "https://app.example"),
            ("Authorization", "Bearer sk-good"),
        ],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
}
