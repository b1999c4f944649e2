//! A few thousand malformed or hostile requests (bad JSON, wrong types, huge
//! numbers, negative values, invalid UTF-8, deep nesting, unknown fields):
//! every answer is a well-formed OpenAI error with a 4xx status, nothing is
//! generated, and a normal request still succeeds afterwards.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{keys, post, request, wait_for, MODEL};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

const CMPL: &str = "/v1/completions";
const CHAT: &str = "/v1/chat/completions";
const ROUNDS: usize = 3000;

fn base(path: &str) -> Map<String, Value> {
    let v = if path == CHAT {
        json!({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1})
    } else {
        json!({"model": MODEL, "prompt": "Hi", "max_tokens": 1})
    };
    match v {
        Value::Object(m) => m,
        _ => unreachable!("an object literal"),
    }
}

/// Values each field can never accept (wrong types, out of range, huge,
/// negative), as JSON text so that numbers JSON itself cannot hold in a
/// double can be sent.
fn invalid_values(field: &str) -> &'static [&'static str] {
    match field {
        "max_tokens" | "max_completion_tokens" => &[
            "-1",
            "0",
            "1.5",
            "\"5\"",
            "true",
            "[1]",
            "1e400",
            "18446744073709551616",
            "9223372036854775807",
            "-9223372036854775808",
            "{}",
        ],
        "n" => &["-1", "0", "129", "4294967296", "1e9", "\"2\"", "[2]"],
        "temperature" => &["-0.5", "-1e30", "1e300", "\"hot\"", "[]", "{}", "true"],
        "top_p" => &["-1", "0", "1.5", "1e300", "\"x\"", "[0.5]"],
        "top_k" => &["-2", "-9223372036854775808", "1.5", "\"4\"", "1e20", "{}"],
        "min_p" => &["-0.1", "2", "\"x\"", "[]"],
        "presence_penalty" | "frequency_penalty" => &["-3", "2.5", "1e300", "\"x\"", "{}"],
        "repetition_penalty" => &["0", "-1", "1e300", "\"x\""],
        "seed" => &[
            "1.5",
            "1e30",
            "-1e30",
            "\"1\"",
            "[1]",
            "18446744073709551616",
        ],
        "min_tokens" => &["-1", "2", "1e9", "\"1\""],
        "stop" => &["5", "{\"a\": 1}", "[1]", "[[]]", "[\"\"]", "true"],
        "logit_bias" => &[
            "\"x\"",
            "[1]",
            "{\"abc\": 1}",
            "{\"1\": \"x\"}",
            "{\"1\": 1e300}",
            "{\"-1\": 1}",
        ],
        "stream" | "ignore_eos" | "skip_special_tokens" | "echo" => {
            &["\"yes\"", "1", "[true]", "{}"]
        }
        "stream_options" => &[
            "\"x\"",
            "5",
            "{\"include_usage\": \"yes\"}",
            "{\"bogus\": 1}",
        ],
        "stop_token_ids" => &["\"x\"", "[-1]", "[\"a\"]", "5", "[1.5]", "[4294967296]"],
        "service_tier" => &["\"platinum\"", "5", "[]"],
        "model" => &["5", "{}", "[\"m\"]", "true", "\"no-such-model\""],
        "prompt" => &[
            "5",
            "{}",
            "true",
            "[-1]",
            "[1, \"a\"]",
            "[[1], 2]",
            "[]",
            "[4294967296]",
            "[99999999]",
        ],
        "messages" => &[
            "\"hi\"",
            "5",
            "{}",
            "[1]",
            "[[]]",
            "[]",
            "[{\"role\": 5, \"content\": \"x\"}]",
            "[{\"role\": \"wizard\", \"content\": \"x\"}]",
        ],
        "logprobs" => &["\"x\"", "-1", "1e6", "99999"],
        "top_logprobs" => &["-1", "99999", "\"3\""],
        _ => &["\"?\""],
    }
}

const FIELDS: &[&str] = &[
    "max_tokens",
    "max_completion_tokens",
    "n",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "seed",
    "min_tokens",
    "stop",
    "logit_bias",
    "stream",
    "ignore_eos",
    "skip_special_tokens",
    "echo",
    "stream_options",
    "stop_token_ids",
    "service_tier",
    "model",
    "prompt",
    "messages",
    "logprobs",
    "top_logprobs",
];

/// `body` with `field` set to the JSON text `value`.
fn with_raw(body: &Map<String, Value>, field: &str, value: &str) -> Vec<u8> {
    let mut map = body.clone();
    map.remove(field);
    let rest = Value::Object(map).to_string();
    let inner = rest
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .unwrap_or("");
    let sep = if inner.is_empty() { "" } else { "," };
    format!("{{\"{field}\": {value}{sep}{inner}}}").into_bytes()
}

/// One hostile request.
fn hostile(rng: &mut StdRng) -> (&'static str, Vec<u8>) {
    let path = if rng.random_bool(0.5) { CMPL } else { CHAT };
    let base = base(path);
    let valid = Value::Object(base.clone()).to_string().into_bytes();
    let body = match rng.random_range(0..10) {
        // Bad JSON: a valid body cut short, or garbage.
        0 => {
            let cut = rng.random_range(0..valid.len());
            valid[..cut].to_vec()
        }
        1 => (0..rng.random_range(1..64))
            .map(|_| rng.random::<u8>())
            .collect(),
        // JSON, but not an object.
        2 => {
            let shapes = ["[1, 2]", "\"text\"", "null", "42", "true", "[]", "[{}]"];
            shapes[rng.random_range(0..shapes.len())]
                .as_bytes()
                .to_vec()
        }
        // Wrong types, out-of-range, huge and negative values.
        3..=5 => {
            let field = FIELDS[rng.random_range(0..FIELDS.len())];
            let values = invalid_values(field);
            // Fields of the other endpoint are unknown here: a 400 as well.
            with_raw(&base, field, values[rng.random_range(0..values.len())])
        }
        // Invalid UTF-8, raw or as a lone surrogate escape.
        6 => {
            let mut v = br#"{"prompt": "ab"#.to_vec();
            v.extend([0xff, 0xfe, rng.random_range(0x80..0xc0)]);
            v.extend(br#"", "max_tokens": 1}"#);
            if rng.random_bool(0.5) {
                br#"{"prompt": "\ud800", "messages": [{"role": "user", "content": "\udfff"}]}"#
                    .to_vec()
            } else {
                v
            }
        }
        // Deep nesting, whole or inside a field.
        7 => {
            let depth = rng.random_range(200..20_000);
            let (open, close) = if rng.random_bool(0.5) {
                ("[", "]")
            } else {
                ("{\"a\":", "}")
            };
            let nested = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            if rng.random_bool(0.5) {
                nested.into_bytes()
            } else {
                with_raw(
                    &base,
                    if path == CHAT { "messages" } else { "prompt" },
                    &nested,
                )
            }
        }
        // Unknown fields.
        8 => {
            let name: String = (0..rng.random_range(1..12))
                .map(|_| char::from(rng.random_range(b'a'..=b'z')))
                .collect();
            with_raw(&base, &format!("zz_{name}"), "1")
        }
        // Extra hostile strings where ids go.
        _ => {
            let long = "x".repeat(rng.random_range(1..100_000));
            with_raw(&base, "model", &Value::String(long).to_string())
        }
    };
    (path, body)
}

/// A well-formed OpenAI error with a 4xx status.
fn check_error(r: &common::Response, what: &[u8]) {
    let shown = String::from_utf8_lossy(&what[..what.len().min(200)]).into_owned();
    assert!(
        (400..500).contains(&r.status),
        "status {} for {shown}: {}",
        r.status,
        r.text()
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{shown}"
    );
    let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {shown}"));
    assert_eq!(keys(&v), ["error"], "{shown}");
    let e = &v["error"];
    assert_eq!(keys(e), ["code", "message", "param", "type"], "{shown}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{shown}"
    );
    assert!(e["type"].is_string(), "{shown}");
}

fn serve() -> (SocketAddr, tessera_engine::engine::EngineHandle) {
    let models = common::models();
    let engine = common::register(&models, MODEL, &common::engine_args("64MiB", 64));
    (common::serve(models, 1 << 20), engine)
}

#[test]
fn thousands_of_hostile_requests_get_well_formed_4xx_errors() {
    let (addr, engine) = serve();
    let mut rng = StdRng::seed_from_u64(0x7e55e7a);
    for _ in 0..ROUNDS {
        let (path, body) = hostile(&mut rng);
        check_error(&request(addr, "POST", path, &body), &body);
    }
    // The other endpoints, and methods and paths that do not exist.
    for (method, path, body) in [
        ("POST", "/tokenize", &b"{\"prompt\": 5}"[..]),
        ("POST", "/tokenize", b"{\"messages\": \"x\"}"),
        ("POST", "/tokenize", b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["),
        ("POST", "/detokenize", b"{\"tokens\": [-1]}"),
        ("POST", "/detokenize", b"{\"tokens\": [\"a\"]}"),
        ("POST", "/detokenize", b"{\"tokens\": [1e20]}"),
        ("POST", "/detokenize", b"{\"tokens\": 5}"),
        ("GET", CMPL, b""),
        ("DELETE", "/v1/models", b""),
        ("POST", "/v1/../../etc/passwd", b"{}"),
    ] {
        check_error(&request(addr, method, path, body), body);
    }
    // Nothing was generated and nothing is held.
    assert_eq!(engine.stats().generated_tokens, 0, "{:?}", engine.stats());
    let total = engine.stats().num_blocks;
    wait_for("idle", Duration::from_secs(10), || {
        engine.stats().free_blocks == total
    });
    // A normal request still works.
    let r = post(addr, CMPL, &json!({"prompt": "Hello", "max_tokens": 3}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["usage"]["completion_tokens"], 3);
}
