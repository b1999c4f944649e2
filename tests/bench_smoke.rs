//! `tessera bench` (the binary) against an in-process tessera server on the
//! default model: a short concurrency sweep on completions and a run on chat.
//! Random prompts must have exactly the asked length by the server's own
//! count (its /tokenize builds them, its usage reports them), outputs exactly
//! the asked length (ignore_eos), and `tessera bench compare` must read the
//! reports back and plot them.

mod common;

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("bench")
        .args(args)
        .output()
        .expect("runs tessera");
    assert!(
        out.status.success(),
        "tessera bench {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn read_json(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).expect("JSON written");
    serde_json::from_str(&text).expect("valid JSON")
}

#[test]
fn tessera_bench_measures_a_tessera_server() {
    let server = common::start();
    let url = format!("http://{}", server.addr);
    let dir = tempfile::tempdir().expect("tempdir");
    let completions = dir.path().join("completions.json");
    let chat = dir.path().join("chat.json");

    let out = bench(&[
        "--base-url",
        &url,
        "--num-prompts",
        "3",
        "--input-len",
        "24",
        "--output-len",
        "6",
        "--sweep",
        "concurrency=1,3",
        "--slo",
        "ttft=60s",
        "--label",
        "tessera",
        "--json",
        completions.to_str().expect("utf-8"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("| output tok/s") && stdout.contains("| TTFT"),
        "{stdout}"
    );

    let report = read_json(&completions);
    assert_eq!(
        report["config"]["model"],
        common::MODEL,
        "the first of /v1/models"
    );
    let points = report["points"].as_array().expect("points");
    assert_eq!(points.len(), 2);
    for (point, concurrency) in points.iter().zip([1, 3]) {
        assert_eq!(point["point"]["max_concurrency"], concurrency);
        assert_eq!(point["summary"]["completed"], 3, "{}", point["summary"]);
        assert_eq!(point["summary"]["failed"], 0);
        assert_eq!(point["summary"]["goodput"]["requests_met"], 3);
        assert!(point["summary"]["peak_concurrency"].as_u64() <= Some(concurrency));
        for r in point["requests"].as_array().expect("requests") {
            assert_eq!(r["prompt_len"], 24);
            assert_eq!(
                r["prompt_tokens"], 24,
                "the server counts the same prompt length"
            );
            assert_eq!(
                r["output_tokens"], 6,
                "ignore_eos gives the exact output length"
            );
            assert_eq!(r["output_tokens_source"], "usage");
            assert_eq!(r["finish_reason"], "length");
            assert!(r["ttft_s"]
                .as_f64()
                .is_some_and(|t| t > 0.0 && t <= r["latency_s"].as_f64().unwrap()));
        }
    }

    bench(&[
        "--base-url",
        &format!("{url}/v1"),
        "--model",
        common::MODEL,
        "--api",
        "chat",
        "--num-prompts",
        "2",
        "--input-len",
        "16",
        "--output-len",
        "5",
        "--max-concurrency",
        "2",
        "--warmup",
        "0",
        "--label",
        "tessera-chat",
        "--json",
        chat.to_str().expect("utf-8"),
    ]);
    let chat_report = read_json(&chat);
    let point = &chat_report["points"][0];
    assert_eq!(point["summary"]["completed"], 2, "{}", point["summary"]);
    for r in point["requests"].as_array().expect("requests") {
        assert_eq!(r["output_tokens"], 5);
        // The chat template wraps the 16-token message: the server counts more.
        assert!(r["prompt_tokens"].as_u64() > Some(16), "{r}");
    }

    let plot = dir.path().join("both.png");
    let out = bench(&[
        "compare",
        completions.to_str().expect("utf-8"),
        chat.to_str().expect("utf-8"),
        "--plot",
        plot.to_str().expect("utf-8"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("tessera-chat"), "{stdout}");
    let png = std::fs::read(&plot).expect("plot written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let (w, h) = (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (1600, 1200));
}
