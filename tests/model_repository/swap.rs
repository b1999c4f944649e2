//! Swaps without downtime: 32 streaming clients run through a swap from
//! version 1 to version 2 and a rollback; nothing fails, and each answer
//! comes from the version its header names.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::common::{read_chunk, read_head, send_with, sse_chunks};

/// One streamed request as a client saw it.
struct Seen {
    started: Instant,
    ended: Instant,
    version: u64,
    text: String,
}

/// A streamed greedy completion of `model`.
fn stream(addr: SocketAddr, model: &str) -> Seen {
    let started = Instant::now();
    let body = json!({"model": model, "prompt": "the cat sat on the", "max_tokens": 6,
                      "temperature": 0, "stream": true, "ignore_eos": true});
    let mut reader = send_with(
        addr,
        "POST",
        "/v1/completions",
        &[],
        body.to_string().as_bytes(),
    );
    let (status, headers) = read_head(&mut reader);
    assert_eq!(status, 200, "{headers:?}");
    let version = headers
        .iter()
        .find(|(k, _)| k == "x-tessera-model-version")
        .map(|(_, v)| v.parse().expect("number"))
        .expect("version header");
    let mut raw = Vec::new();
    while let Some(chunk) = read_chunk(&mut reader) {
        raw.extend(chunk);
    }
    let chunks = sse_chunks(&raw);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish, Some("length"), "{}", String::from_utf8_lossy(&raw));
    Seen {
        started,
        ended: Instant::now(),
        version,
        text,
    }
}

#[test]
fn a_swap_under_load_fails_nothing_and_rolls_back() {
    let server = RepoServer::start(roomy(), |root| {
        default_version(root, "m", 1);
        tiny_version(root, "m", 2, 7);
        settings(
            root,
            "m",
            "version_policy = { specific = [1] }\naliases = { prod = 1 }\ndefault = \"prod\"\n\
             kv-cache-memory = \"64MiB\"\nmax-model-len = 512\n",
        );
    });
    assert_eq!(server.status("m:1"), "ready");
    assert_eq!(server.status("m:2"), "unavailable");
    // What each version answers, alone (batch invariance makes it exact).
    let reference = |version: u64| {
        let seen = stream(server.addr, &format!("m:{version}"));
        assert_eq!(seen.version, version);
        seen.text
    };
    let (text1, text2) = (reference(1), reference(2));
    assert_ne!(text1, text2, "the versions must be told apart");

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let addr = server.addr;
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let (stop, seen) = (stop.clone(), seen.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let s = stream(addr, "m");
                    seen.lock().expect("lock").push(s);
                }
            })
        })
        .collect();
    let count = || seen.lock().expect("lock").len();
    let wait_more = |n: usize| {
        let target = count() + n;
        common::wait_for("requests", Duration::from_secs(300), || count() >= target);
    };
    wait_more(32);

    let swap_sent = Instant::now();
    let r = server.admin(
        "PUT",
        "/v2/repository/models/m/aliases/prod",
        &json!({"version": 2}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let swap_done = Instant::now();
    assert_eq!(server.card("m@prod.previous")["version"], 1);
    wait_more(64);

    let rollback_sent = Instant::now();
    let r = server.admin(
        "POST",
        "/v2/repository/models/m/aliases/prod/rollback",
        &json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let rollback_done = Instant::now();
    wait_more(64);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("no client failed");
    }

    let seen = seen.lock().expect("lock");
    let (mut before, mut between, mut after) = (0, 0, 0);
    for s in seen.iter() {
        let expected = if s.version == 1 { &text1 } else { &text2 };
        assert_eq!(
            &s.text, expected,
            "version {} answered as the other",
            s.version
        );
        if s.ended < swap_sent {
            assert_eq!(s.version, 1, "before the swap");
            before += 1;
        } else if s.started > swap_done && s.ended < rollback_sent {
            assert_eq!(s.version, 2, "after the swap");
            between += 1;
        } else if s.started > rollback_done {
            assert_eq!(s.version, 1, "after the rollback");
            after += 1;
        }
    }
    assert!(
        before >= 32 && between >= 32 && after >= 32,
        "{before} {between} {after}"
    );
}
