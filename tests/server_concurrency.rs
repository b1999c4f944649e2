//! 64 clients streaming at once each get exactly what they get alone: greedy
//! outputs are independent of what else is batched with them.

mod common;

use std::collections::HashMap;

use common::{post, sse_chunks, MODEL};
use serde_json::{json, Value};

const CLIENTS: usize = 64;
const MAX_TOKENS: usize = 6;

const SUBJECTS: [&str; 16] = [
    "the sea",
    "a cat",
    "Paris",
    "winter",
    "a robot",
    "the moon",
    "coffee",
    "trains",
    "a forest",
    "music",
    "bread",
    "the desert",
    "a library",
    "rain",
    "chess",
    "volcanoes",
];

/// Client `i` sends request `i % 16`: a quarter are chats (whose template
/// makes longer prompts), the rest plain completions.
fn is_chat(i: usize) -> bool {
    i.is_multiple_of(4)
}

fn body(i: usize, stream: bool) -> Value {
    let subject = SUBJECTS[i % SUBJECTS.len()];
    if is_chat(i) {
        json!({"model": MODEL, "messages": [{"role": "user", "content": format!("Write one sentence about {subject}.")}],
               "max_tokens": MAX_TOKENS, "temperature": 0, "stream": stream})
    } else {
        json!({"model": MODEL, "prompt": format!("A short poem about {subject}:\n"),
               "max_tokens": MAX_TOKENS, "temperature": 0, "stream": stream})
    }
}

/// The text of a streamed response (chat deltas or completion texts).
fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| {
            c["delta"]["content"]
                .as_str()
                .or(c["text"].as_str())
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn sixty_four_concurrent_streams_equal_their_solo_runs() {
    let server = common::start();
    let start = std::time::Instant::now();
    let path = |i: usize| {
        if is_chat(i) {
            "/v1/chat/completions"
        } else {
            "/v1/completions"
        }
    };

    // Solo: one request at a time, not streamed.
    let mut solo = HashMap::new();
    for i in 0..SUBJECTS.len() {
        let r = post(server.addr, path(i), &body(i, false));
        assert_eq!(r.status, 200, "{}", r.text());
        let c = &r.json()["choices"][0];
        let text = c["message"]["content"]
            .as_str()
            .or(c["text"].as_str())
            .expect("text");
        solo.insert(i, text.to_string());
    }

    // Together: 64 streaming clients, all in flight at once.
    let solo_done = std::time::Instant::now();
    eprintln!("solo runs: {:.1}s", (solo_done - start).as_secs_f64());
    let steps_before = server.engine.stats().steps;
    let addr = server.addr;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let r = post(addr, path(i), &body(i, true));
                assert_eq!(r.status, 200, "client {i}: {}", r.text());
                streamed_text(&sse_chunks(&r.body))
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let text = h.join().expect("client thread");
        assert_eq!(text, solo[&(i % SUBJECTS.len())], "client {i}");
    }
    let stats = server.engine.stats();
    eprintln!("64 concurrent: {:.1}s", solo_done.elapsed().as_secs_f64());
    // Batched for real: far fewer steps than 64 clients x 6 tokens run alone.
    assert!(
        stats.steps - steps_before < (CLIENTS * MAX_TOKENS / 2) as u64,
        "{stats:?}"
    );
    // The gauge is published at the end of the step that sent the last output.
    common::wait_for(
        "every block to be free",
        std::time::Duration::from_secs(10),
        || {
            let s = server.engine.stats();
            s.free_blocks == s.num_blocks
        },
    );
}
