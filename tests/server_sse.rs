//! The HTTP server over the default model, seen as raw bytes: every SSE chunk
//! has OpenAI's shape, streamed and whole responses agree, and every bad
//! request gets an OpenAI-shaped error with the right status.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use common::{keys, post, request, sse_chunks, TestServer, MODEL};
use serde_json::{json, Value};
use tessera_server::ModelRegistry;

/// Served beside the default model with a waiting queue of 0: every request
/// to it is refused with 429.
const FULL_MODEL: &str = "smol-full";

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = common::start();
        common::register(
            &server.registry,
            FULL_MODEL,
            &common::engine_args("16MiB", 0),
        );
        server
    })
}

const CHUNK_KEYS: [&str; 7] = [
    "choices",
    "created",
    "id",
    "model",
    "object",
    "system_fingerprint",
    "usage",
];

/// Checks the shape of every chunk of a streamed chat completion with
/// `include_usage`, and returns each choice's content and the final usage.
fn check_chat_stream(chunks: &[Value], n: usize, logprobs: bool) -> (Vec<String>, Value) {
    let first = &chunks[0];
    let mut content = vec![String::new(); n];
    let mut saw_role = vec![false; n];
    let mut finished = vec![false; n];
    let (last, body) = chunks.split_last().expect("chunks");
    for chunk in body {
        assert_eq!(keys(chunk), CHUNK_KEYS, "{chunk}");
        assert_eq!(chunk["object"], "chat.completion.chunk");
        for k in ["id", "created", "model", "system_fingerprint"] {
            assert_eq!(chunk[k], first[k], "{k} changes between chunks");
        }
        assert!(chunk["id"].as_str().expect("id").starts_with("chatcmpl-"));
        assert!(chunk["created"].as_u64().expect("created") > 1_600_000_000);
        assert_eq!(chunk["model"], MODEL);
        assert!(
            chunk["usage"].is_null(),
            "usage only on the last chunk: {chunk}"
        );
        let choices = chunk["choices"].as_array().expect("choices");
        assert_eq!(choices.len(), 1, "{chunk}");
        let c = &choices[0];
        assert_eq!(keys(c), ["delta", "finish_reason", "index", "logprobs"]);
        let i = c["index"].as_u64().expect("index") as usize;
        assert!(i < n, "{chunk}");
        assert!(!finished[i], "a chunk after choice {i} finished: {chunk}");
        let delta = &c["delta"];
        if !saw_role[i] {
            // The role comes first, alone.
            assert_eq!(
                delta,
                &json!({"role": "assistant", "content": ""}),
                "{chunk}"
            );
            assert!(c["finish_reason"].is_null() && c["logprobs"].is_null());
            saw_role[i] = true;
            continue;
        }
        assert!(delta.get("role").is_none(), "role sent twice: {chunk}");
        match c["finish_reason"].as_str() {
            Some(reason) => {
                assert!(["stop", "length"].contains(&reason), "{chunk}");
                assert_eq!(delta, &json!({}), "{chunk}");
                finished[i] = true;
            }
            None => {
                assert!(c["finish_reason"].is_null());
                let text = delta["content"].as_str().expect("content delta");
                content[i].push_str(text);
                if logprobs {
                    check_chat_logprobs(&c["logprobs"], text);
                } else {
                    assert!(c["logprobs"].is_null());
                }
            }
        }
    }
    assert!(finished.iter().all(|&f| f), "every choice finishes");
    // The usage chunk: no choices.
    assert_eq!(keys(last), CHUNK_KEYS);
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["id"], first["id"]);
    let usage = last["usage"].clone();
    assert_eq!(
        keys(&usage),
        [
            "completion_tokens",
            "prompt_tokens",
            "prompt_tokens_details",
            "total_tokens"
        ]
    );
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().expect("p")
                + usage["completion_tokens"].as_u64().expect("c")
        )
    );
    (content, usage)
}

/// Chat logprobs of one delta: one entry per token, whose texts make the delta.
fn check_chat_logprobs(lp: &Value, text: &str) {
    assert_eq!(keys(lp), ["content", "refusal"]);
    let entries = lp["content"].as_array().expect("content list");
    assert_eq!(entries.len(), 1, "one token per delta: {lp}");
    let mut joined = String::new();
    for e in entries {
        assert_eq!(keys(e), ["bytes", "logprob", "token", "top_logprobs"]);
        let token = e["token"].as_str().expect("token");
        joined.push_str(token);
        let bytes: Vec<u8> = serde_json::from_value(e["bytes"].clone()).expect("bytes");
        assert_eq!(bytes, token.as_bytes());
        let logprob = e["logprob"].as_f64().expect("logprob");
        assert!(logprob <= 0.0);
        let top = e["top_logprobs"].as_array().expect("top");
        assert_eq!(top.len(), 2);
        for t in top {
            assert_eq!(keys(t), ["bytes", "logprob", "token"]);
        }
        // Sorted, and the sampled token is no likelier than the best one.
        let best = top[0]["logprob"].as_f64().expect("lp");
        assert!(best >= top[1]["logprob"].as_f64().expect("lp"));
        assert!(logprob <= best + 1e-6);
    }
    assert_eq!(joined, text, "logprob tokens spell the delta");
}

#[test]
fn streamed_chat_chunks_have_openai_shapes_and_match_the_whole_response() {
    let s = server();
    let mut req = json!({
        "model": MODEL,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
        "n": 2, "temperature": 0.9, "seed": 7, "max_tokens": 8,
        "logprobs": true, "top_logprobs": 2,
        "stream": true, "stream_options": {"include_usage": true},
    });
    let r = post(s.addr, "/v1/chat/completions", &req);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let chunks = sse_chunks(&r.body);
    let (streamed, usage) = check_chat_stream(&chunks, 2, true);
    assert_ne!(streamed[0], streamed[1], "two samples differ");

    // The same request whole: same seed, same text.
    req["stream"] = json!(false);
    req.as_object_mut().expect("obj").remove("stream_options");
    let r = post(s.addr, "/v1/chat/completions", &req);
    assert_eq!(r.status, 200, "{}", r.text());
    let whole = r.json();
    assert_eq!(
        keys(&whole),
        [
            "choices",
            "created",
            "id",
            "model",
            "object",
            "system_fingerprint",
            "usage"
        ]
    );
    assert_eq!(whole["object"], "chat.completion");
    for (i, c) in whole["choices"]
        .as_array()
        .expect("choices")
        .iter()
        .enumerate()
    {
        assert_eq!(keys(c), ["finish_reason", "index", "logprobs", "message"]);
        assert_eq!(c["index"], i);
        assert_eq!(c["message"]["role"], "assistant");
        assert_eq!(c["message"]["content"], streamed[i].as_str());
        let n_tokens = c["logprobs"]["content"].as_array().expect("lp").len();
        assert!(n_tokens <= 8 && n_tokens > 0);
    }
    assert_eq!(whole["usage"]["prompt_tokens"], usage["prompt_tokens"]);
    assert_eq!(
        whole["usage"]["completion_tokens"],
        usage["completion_tokens"]
    );
}

#[test]
fn streamed_completions_have_openai_shapes_for_several_prompts() {
    let s = server();
    let mut req = json!({
        "model": MODEL, "prompt": ["The capital of France is", "1, 2, 3,"],
        "max_tokens": 6, "temperature": 0, "logprobs": 1,
        "stream": true, "stream_options": {"include_usage": true},
    });
    let r = post(s.addr, "/v1/completions", &req);
    assert_eq!(r.status, 200, "{}", r.text());
    let chunks = sse_chunks(&r.body);
    let (last, body) = chunks.split_last().expect("chunks");
    let mut texts = BTreeMap::<u64, String>::new();
    let mut finished = BTreeMap::new();
    for chunk in body {
        assert_eq!(keys(chunk), CHUNK_KEYS, "{chunk}");
        assert_eq!(chunk["object"], "text_completion");
        assert!(chunk["id"].as_str().expect("id").starts_with("cmpl-"));
        assert_eq!(chunk["id"], chunks[0]["id"]);
        assert!(chunk["usage"].is_null());
        let c = &chunk["choices"][0];
        assert_eq!(chunk["choices"].as_array().map(Vec::len), Some(1));
        assert_eq!(keys(c), ["finish_reason", "index", "logprobs", "text"]);
        let i = c["index"].as_u64().expect("index");
        assert!(i < 2);
        assert!(!finished.contains_key(&i), "chunk after finish: {chunk}");
        let text = c["text"].as_str().expect("text");
        texts.entry(i).or_default().push_str(text);
        let lp = &c["logprobs"];
        assert_eq!(
            keys(lp),
            ["text_offset", "token_logprobs", "tokens", "top_logprobs"]
        );
        let tokens: Vec<String> = serde_json::from_value(lp["tokens"].clone()).expect("tokens");
        assert_eq!(tokens.concat(), text, "{chunk}");
        for top in lp["top_logprobs"].as_array().expect("top") {
            assert_eq!(top.as_object().map(|o| o.len()), Some(1), "{top}");
        }
        if let Some(reason) = c["finish_reason"].as_str() {
            finished.insert(i, reason.to_string());
        }
    }
    assert_eq!(finished.len(), 2);
    assert_eq!(last["choices"], json!([]));
    let usage = &last["usage"];
    assert_eq!(usage["completion_tokens"], 12);

    req["stream"] = json!(false);
    req.as_object_mut().expect("obj").remove("stream_options");
    let whole = post(s.addr, "/v1/completions", &req).json();
    assert_eq!(whole["object"], "text_completion");
    assert_eq!(whole["usage"]["prompt_tokens"], usage["prompt_tokens"]);
    for c in whole["choices"].as_array().expect("choices") {
        let i = c["index"].as_u64().expect("index");
        assert_eq!(c["text"].as_str(), texts.get(&i).map(String::as_str));
        assert_eq!(
            c["finish_reason"].as_str(),
            finished.get(&i).map(String::as_str)
        );
        let offsets: Vec<usize> =
            serde_json::from_value(c["logprobs"]["text_offset"].clone()).expect("offsets");
        assert_eq!(offsets.len(), 6);
        assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
    }
}

#[test]
fn echo_prepends_the_prompt_and_token_prompts_work() {
    let s = server();
    let tokens = post(s.addr, "/tokenize", &json!({"prompt": "Once upon a time"})).json();
    let ids = tokens["tokens"].clone();
    assert_eq!(tokens["count"], ids.as_array().map(Vec::len).unwrap_or(0));
    let text = post(s.addr, "/detokenize", &json!({"tokens": ids})).json();
    assert_eq!(text["prompt"], "Once upon a time");

    let by_text = post(
        s.addr,
        "/v1/completions",
        &json!({"prompt": "Once upon a time", "max_tokens": 4, "temperature": 0, "echo": true}),
    )
    .json();
    let by_ids = post(
        s.addr,
        "/v1/completions",
        &json!({"prompt": [ids], "max_tokens": 4, "temperature": 0, "echo": true}),
    )
    .json();
    let t = by_text["choices"][0]["text"].as_str().expect("text");
    assert!(
        t.starts_with("Once upon a time") && t.len() > "Once upon a time".len(),
        "{t}"
    );
    assert_eq!(by_ids["choices"][0]["text"].as_str(), Some(t));
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
            json!({"messages": msgs, "tools": [{"type": "function", "function": {"name": "f"}}]}),
            400,
            Some("tools"),
        ),
        (
            chat,
            json!({"messages": msgs, "response_format": {"type": "json_schema"}}),
            400,
            Some("response_format"),
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
    assert_eq!(ids, [MODEL, FULL_MODEL]);
    let one = request(s.addr, "GET", &format!("/v1/models/{MODEL}"), b"").json();
    assert_eq!(
        keys(&one),
        ["created", "id", "max_model_len", "object", "owned_by"]
    );
    assert_eq!(
        (one["object"].as_str(), one["max_model_len"].as_u64()),
        (Some("model"), Some(2048))
    );
    assert_eq!(request(s.addr, "GET", "/v1/models/a/b", b"").status, 404);
}

#[test]
fn not_ready_until_loaded() {
    let registry = Arc::new(ModelRegistry::new());
    let addr = common::serve(registry.clone(), 1 << 20);
    assert_eq!(request(addr, "GET", "/health", b"").status, 200);
    let r = request(addr, "GET", "/ready", b"");
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (503, Some("model_not_ready"))
    );
    let r = post(addr, "/v1/completions", &json!({"prompt": "x"}));
    assert_eq!(r.status, 503);
    registry.set_ready(true);
    assert_eq!(request(addr, "GET", "/ready", b"").status, 200);
}
