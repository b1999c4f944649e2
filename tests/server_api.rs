//! The HTTP server's non-streaming surface over raw bytes: every bad request
//! gets an OpenAI-shaped error with the right status and param; models are
//! listed with their versions and states; /ready says 503 until loaded.

mod common;

use std::sync::OnceLock;

use common::{keys, post, request, TestServer, MODEL};
use serde_json::{json, Value};

/// Served beside the default model with a waiting queue of 0: every request
/// to it is refused with 429.
const FULL_MODEL: &str = "smol-full";

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = common::start();
        common::register(&server.models, FULL_MODEL, &common::engine_args("16MiB", 0));
        server
    })
}

/// Sends `body` and checks the OpenAI error shape, the status and the param.
fn expect_error(path: &str, body: &[u8], status: u16, param: Option<&str>) -> Value {
    let r = request(server().addr, "POST", path, body);
    assert_eq!(
        r.status,
        status,
        "{}: {}",
        String::from_utf8_lossy(body),
        r.text()
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(keys(&v), ["error"]);
    let e = &v["error"];
    assert_eq!(keys(e), ["code", "message", "param", "type"]);
    assert!(!e["message"].as_str().expect("message").is_empty());
    assert_eq!(e["param"].as_str(), param, "{v}");
    e.clone()
}

#[test]
fn bad_requests_get_openai_errors_naming_the_problem() {
    let chat = "/v1/chat/completions";
    let cmpl = "/v1/completions";
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let cases: Vec<(&str, Value, u16, Option<&str>)> = vec![
        (
            chat,
            json!({"model": "nope", "messages": msgs}),
            404,
            Some("model"),
        ),
        (
            chat,
            json!({"messages": msgs, "tools": [{"type": "function", "function": {"name": "f"}}],
                   "tool_choice": {"type": "function", "function": {"name": "g"}}}),
            400,
            Some("tool_choice"),
        ),
        (
            chat,
            json!({"messages": msgs, "response_format": {"type": "json_schema"}}),
            400,
            Some("response_format.json_schema"),
        ),
        (
            chat,
            json!({"messages": msgs, "frobnicate": 1}),
            400,
            Some("frobnicate"),
        ),
        (
            chat,
            json!({"messages": msgs, "temperature": -1}),
            400,
            Some("temperature"),
        ),
        (
            chat,
            json!({"messages": msgs, "top_p": "x"}),
            400,
            Some("top_p"),
        ),
        (
            chat,
            json!({"messages": msgs, "top_logprobs": 3}),
            400,
            Some("top_logprobs"),
        ),
        (
            chat,
            json!({"messages": msgs, "logprobs": true, "top_logprobs": 21}),
            400,
            Some("logprobs"),
        ),
        (chat, json!({"messages": msgs, "n": 0}), 400, Some("n")),
        (chat, json!({"messages": []}), 400, Some("messages")),
        (
            chat,
            json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
            400,
            Some("messages[0].content[0]"),
        ),
        (
            chat,
            json!({"messages": msgs, "stream_options": {"include_usage": true}}),
            400,
            Some("stream_options"),
        ),
        (
            cmpl,
            json!({"prompt": "x", "suffix": "y"}),
            400,
            Some("suffix"),
        ),
        (
            cmpl,
            json!({"prompt": "x", "best_of": 3}),
            400,
            Some("best_of"),
        ),
        (
            cmpl,
            json!({"prompt": "x", "echo": true, "logprobs": 1}),
            400,
            Some("echo"),
        ),
        (cmpl, json!({"prompt": [1, "a"]}), 400, Some("prompt")),
        (cmpl, json!({"prompt": []}), 400, Some("prompt")),
        (cmpl, json!({"prompt": [99999999]}), 400, None),
        (
            cmpl,
            json!({"prompt": "x", "logit_bias": {"abc": 1}}),
            400,
            Some("logit_bias"),
        ),
        (
            cmpl,
            json!({"prompt": "x", "stop": ["", "a"]}),
            400,
            Some("stop"),
        ),
        (
            cmpl,
            json!({"prompt": "x", "max_tokens": 0}),
            400,
            Some("max_tokens"),
        ),
        (cmpl, json!({"model": FULL_MODEL, "prompt": "x"}), 429, None),
    ];
    for (path, body, status, param) in cases {
        expect_error(path, body.to_string().as_bytes(), status, param);
    }
    expect_error(chat, b"{not json", 400, None);
    expect_error(chat, b"[1]", 400, None);
    // Prompt plus max_tokens over the context: OpenAI's wording and numbers.
    let e = expect_error(
        cmpl,
        json!({"prompt": "Hello", "max_tokens": 5000})
            .to_string()
            .as_bytes(),
        400,
        Some("prompt"),
    );
    assert_eq!(e["code"], "context_length_exceeded");
    let msg = e["message"].as_str().expect("message");
    assert!(
        msg.starts_with("This model's maximum context length is 2048 tokens. However, you requested 5001 tokens (1 in the prompt, 5000 in the completion)."),
        "{msg}"
    );
    // Over the body limit (1 MiB in these tests).
    let big = format!(r#"{{"prompt": "{}"}}"#, "a".repeat(1 << 21));
    let e = expect_error(cmpl, big.as_bytes(), 413, None);
    assert_eq!(e["code"], "request_too_large");
    // The queue-full error says when to come back.
    let r = post(
        server().addr,
        cmpl,
        &json!({"model": FULL_MODEL, "prompt": "x"}),
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    // Unknown routes and methods.
    let r = request(server().addr, "GET", "/v1/nothing", b"");
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (404, Some("unknown_url"))
    );
    let r = request(server().addr, "GET", "/v1/completions", b"");
    assert_eq!(r.status, 405);
    assert_eq!(keys(&r.json()), ["error"]);
}

#[test]
fn models_lists_every_registered_model() {
    let s = server();
    let r = request(s.addr, "GET", "/v1/models", b"");
    let v = r.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    let versioned = |m: &str| format!("{m}:1");
    assert_eq!(
        ids,
        [MODEL, &versioned(MODEL), FULL_MODEL, &versioned(FULL_MODEL)]
    );
    let one = request(s.addr, "GET", &format!("/v1/models/{MODEL}"), b"").json();
    assert_eq!(
        keys(&one),
        [
            "created",
            "id",
            "max_model_len",
            "object",
            "owned_by",
            "resident_bytes",
            "status",
            "target",
            "version"
        ]
    );
    assert_eq!(
        (one["object"].as_str(), one["max_model_len"].as_u64()),
        (Some("model"), Some(2048))
    );
    assert_eq!(
        (one["status"].as_str(), one["version"].as_u64()),
        (Some("ready"), Some(1))
    );
    // Weights (the GGUF, 98 MB) plus the 192 MiB KV cache.
    let resident = one["resident_bytes"].as_u64().expect("bytes");
    assert!(resident > 192 << 20 && resident < 320 << 20, "{resident}");
    let version = request(s.addr, "GET", &format!("/v1/models/{MODEL}:1"), b"").json();
    assert!(!keys(&version).contains(&"target"), "{version}");
    assert_eq!(request(s.addr, "GET", "/v1/models/a/b", b"").status, 404);
}

#[test]
fn not_ready_until_loaded() {
    let state = tessera_server::AppState::new(common::models(), Default::default()).expect("state");
    let addr = common::serve_state(state.clone(), None);
    assert_eq!(request(addr, "GET", "/health", b"").status, 200);
    let r = request(addr, "GET", "/ready", b"");
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (503, Some("model_not_ready"))
    );
    let r = post(addr, "/v1/completions", &json!({"prompt": "x"}));
    assert_eq!(r.status, 503);
    state.set_ready(true);
    assert_eq!(request(addr, "GET", "/ready", b"").status, 200);
}
