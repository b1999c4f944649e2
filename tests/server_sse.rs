//! The HTTP server over the default model, seen as raw bytes: every SSE chunk
//! has OpenAI's shape, and streamed and whole responses agree. (Errors, models
//! and readiness are in server_api.rs.)

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use common::{keys, post, sse_chunks, TestServer, MODEL};
use serde_json::{json, Value};

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(common::start)
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
