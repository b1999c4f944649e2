//! A client that goes away (mid-stream, or waiting for a whole response)
//! aborts its request: generation stops and every KV block comes back (seen
//! through the engine's stats).

mod common;

use std::time::Duration;

use common::{read_chunk, read_head, send, wait_for};
use serde_json::json;

#[test]
fn a_client_that_leaves_aborts_its_request_and_frees_every_block() {
    let models = common::models();
    let engine = common::register(&models, common::MODEL, &common::engine_args("64MiB", 16));
    let addr = common::serve(models, 1 << 20);
    let total = engine.stats().num_blocks;
    assert!(total > 0);
    assert_eq!(engine.stats().free_blocks, total);

    for path in ["/v1/completions", "/v1/chat/completions"] {
        let before = engine.stats().generated_tokens;
        let mut body =
            json!({"max_tokens": 1000, "ignore_eos": true, "temperature": 0, "stream": true});
        if path == "/v1/completions" {
            body["prompt"] = json!("Tell me a very long story about a dragon.");
        } else {
            body["messages"] = json!([{"role": "user", "content": "Tell me a long story."}]);
        }
        let mut reader = send(addr, "POST", path, body.to_string().as_bytes());
        let (status, _) = read_head(&mut reader);
        assert_eq!(status, 200);
        // A few chunks in, the request holds blocks.
        for _ in 0..4 {
            let chunk = read_chunk(&mut reader).expect("a chunk");
            assert!(
                chunk.starts_with(b"data: {"),
                "{}",
                String::from_utf8_lossy(&chunk)
            );
        }
        assert!(engine.stats().free_blocks < total, "{:?}", engine.stats());
        drop(reader); // the client goes away

        wait_for("the blocks to come back", Duration::from_secs(60), || {
            engine.stats().free_blocks == total
        });
        let generated = engine.stats().generated_tokens - before;
        std::thread::sleep(Duration::from_millis(300));
        let after = engine.stats().generated_tokens - before;
        assert_eq!(generated, after, "generation stopped");
        assert!(
            generated < 1000,
            "{path}: aborted early, not run to max_tokens ({generated})"
        );
    }

    // A client waiting for a whole (non-streamed) response that goes away
    // aborts it too: hyper drops the handler, which drops the engine stream.
    let before = engine.stats().generated_tokens;
    let body = json!({"prompt": "Once upon a time", "max_tokens": 1000, "ignore_eos": true});
    let reader = send(addr, "POST", "/v1/completions", body.to_string().as_bytes());
    wait_for("generation to start", Duration::from_secs(60), || {
        engine.stats().generated_tokens > before + 3
    });
    drop(reader);
    wait_for("the blocks to come back", Duration::from_secs(60), || {
        engine.stats().free_blocks == total
    });
    let generated = engine.stats().generated_tokens - before;
    assert!(generated < 1000, "aborted early ({generated})");
}
