//! `tessera bench` against a scripted server: an SSE server on a raw socket
//! whose replies are chosen by the prompt, with known delays. Checks that
//! the measured TTFT and ITL match the script (within generous tolerances:
//! the machine is shared), that token counts fall back to chunks without
//! usage, and that every kind of failure is counted and kept, not dropped.

mod scripted;

use clap::Parser;
use scripted::{start_server, ITL_MS, TOKENS, TTFT_MS};
use serde_json::json;
use tessera_bench::bench::run_benchmark;
use tessera_bench::record::{FailureKind, TokenSource};
use tessera_bench::report::BenchReport;
use tessera_bench::BenchArgs;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn args(line: &[&str]) -> BenchArgs {
    Cli::try_parse_from(std::iter::once("bench").chain(line.iter().copied()))
        .unwrap_or_else(|e| panic!("{e}"))
        .args
}

fn write_prompts(dir: &std::path::Path, prompts: &[&str]) -> String {
    let path = dir.join("prompts.jsonl");
    let lines: Vec<String> = prompts
        .iter()
        .map(|p| json!({"prompt": p, "output_len": TOKENS}).to_string())
        .collect();
    std::fs::write(&path, lines.join("\n")).expect("write prompts");
    path.display().to_string()
}

#[test]
fn timings_match_the_script_and_every_failure_is_counted() {
    let url = start_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let prompts = write_prompts(
        dir.path(),
        &[
            "ok",
            "ok",
            "no-usage",
            "http-500",
            "truncated",
            "stream-error",
            "slow",
        ],
    );
    let json_path = dir.path().join("report.json");
    let report = run_benchmark(args(&[
        "--base-url",
        &url,
        "--dataset",
        "jsonl",
        "--dataset-path",
        &prompts,
        "--no-shuffle",
        "--num-prompts",
        "7",
        "--warmup",
        "0",
        "--timeout",
        "1s",
        "--slo",
        "ttft=10s",
        "--json",
        json_path.to_str().expect("utf-8 path"),
        "--no-progress",
    ]))
    .expect("the benchmark runs");
    assert_eq!(
        report.config.model, "scripted",
        "the model comes from /v1/models"
    );
    let point = &report.points[0];
    let s = &point.summary;
    assert_eq!((s.completed, s.failed), (3, 4), "{s:?}");
    for kind in [
        FailureKind::Http,
        FailureKind::Truncated,
        FailureKind::StreamError,
        FailureKind::Timeout,
    ] {
        assert_eq!(
            s.failures.get(&kind),
            Some(&1),
            "{kind:?} in {:?}",
            s.failures
        );
    }
    let r = &point.requests;
    assert_eq!(r.len(), 7, "failed requests are kept");
    assert!(r[3].error.as_ref().unwrap().message.contains("HTTP 500"));
    assert!(r[3]
        .error
        .as_ref()
        .unwrap()
        .message
        .contains("scripted failure"));
    assert!(r[5].error.as_ref().unwrap().message.contains("engine died"));
    assert!(
        r[6].latency_s >= 0.9,
        "the slow one ran into the 1 s timeout"
    );

    // Usage counts tokens; without it, chunks do (and the record says so).
    for ok in &r[..3] {
        assert!(ok.ok(), "{ok:?}");
        assert_eq!(ok.output_tokens, TOKENS);
        assert_eq!(ok.finish_reason.as_deref(), Some("length"));
        assert_eq!(ok.text, "tok ".repeat(TOKENS));
    }
    assert_eq!(r[0].output_tokens_source, TokenSource::Usage);
    assert_eq!(r[2].output_tokens_source, TokenSource::Chunks);
    assert_eq!(s.output_counted_from_chunks, 1);
    assert_eq!(s.total_output_tokens, 3 * TOKENS);
    assert_eq!(
        r[0].prompt_len, 1,
        "prompt length from the server's /tokenize"
    );

    // Timings: the script's TTFT sleep is a lower bound; a gap can come out
    // shorter than the script's when the chunk before it was read late, so
    // gaps get a wide band and their median a narrower one. Upper bounds are
    // generous: the machine is shared.
    let ms = |s: f64| s * 1e3;
    for ok in &r[..3] {
        let ttft = ms(ok.ttft_s.expect("ttft"));
        assert!(
            (TTFT_MS as f64 - 5.0..TTFT_MS as f64 + 250.0).contains(&ttft),
            "TTFT {ttft} ms"
        );
        assert_eq!(ok.itl_s.len(), TOKENS - 1);
        for gap in ok.itl_s.iter().map(|g| ms(*g)) {
            assert!(
                (ITL_MS as f64 / 2.0..ITL_MS as f64 + 150.0).contains(&gap),
                "ITL {gap} ms"
            );
        }
        let tpot = ms(ok.tpot_s().expect("tpot"));
        assert!(
            (ITL_MS as f64 - 20.0..ITL_MS as f64 + 150.0).contains(&tpot),
            "TPOT {tpot} ms"
        );
    }
    let itl = s.itl_ms.expect("itl");
    assert_eq!(itl.count, 3 * (TOKENS - 1));
    assert!(
        (itl.median - ITL_MS as f64).abs() < 40.0,
        "median ITL {}",
        itl.median
    );
    assert_eq!(s.goodput.expect("goodput").requests_met, 3);

    // The JSON file is the same report, every record included (floats to
    // within parsing precision).
    let back = BenchReport::read(&json_path).expect("report reads back");
    let (bp, p) = (&back.points[0], &report.points[0]);
    assert_eq!(back.config, report.config);
    assert_eq!(bp.requests.len(), 7);
    assert_eq!(
        (bp.summary.completed, &bp.summary.failures),
        (p.summary.completed, &p.summary.failures)
    );
    for (b, r) in bp.requests.iter().zip(&p.requests) {
        assert_eq!(
            (&b.error, &b.text, b.output_tokens),
            (&r.error, &r.text, r.output_tokens)
        );
        assert!((b.latency_s - r.latency_s).abs() < 1e-12);
    }
}

#[test]
fn a_server_failing_every_warm_up_request_stops_the_benchmark() {
    let url = start_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let prompts = write_prompts(dir.path(), &["http-500"]);
    let err = run_benchmark(args(&[
        "--base-url",
        &url,
        "--model",
        "m",
        "--dataset",
        "jsonl",
        "--dataset-path",
        &prompts,
        "--num-prompts",
        "3",
        "--no-progress",
    ]))
    .expect_err("every warm-up request fails");
    let msg = err.to_string();
    assert!(msg.contains("warm-up") && msg.contains("HTTP 500"), "{msg}");
}

#[test]
fn options_that_would_do_nothing_are_errors() {
    for (line, why) in [
        (
            vec![
                "--dataset",
                "jsonl",
                "--dataset-path",
                "x",
                "--input-len",
                "5",
            ],
            "--input-len",
        ),
        (vec!["--dataset-path", "x"], "--dataset-path"),
        (vec!["--burstiness", "0.5"], "--burstiness"),
        (
            vec!["--sweep", "concurrency=1,2", "--max-concurrency", "4"],
            "--max-concurrency",
        ),
        (
            vec![
                "--dataset",
                "sharegpt",
                "--dataset-path",
                "x",
                "--output-len",
                "5",
            ],
            "--output-len",
        ),
        (vec!["--dataset", "jsonl"], "--dataset-path"),
    ] {
        let mut full = vec!["--base-url", "http://127.0.0.1:9"];
        full.extend(line);
        let err = args(&full).check().expect_err(why);
        assert!(err.to_string().contains(why), "{err}");
    }
    // A finite rate in a sweep gives --burstiness something to shape.
    let ok = args(&[
        "--base-url",
        "http://h",
        "--burstiness",
        "0.5",
        "--sweep",
        "rate=1,inf",
    ]);
    assert!(ok.check().is_ok());
    assert_eq!(
        args(&["--base-url", "http://h:1/v1/"]).root_url().unwrap(),
        "http://h:1"
    );
    assert!(args(&["--base-url", "h:1"]).root_url().is_err());
}

#[test]
fn requests_lost_to_a_closed_kept_alive_connection_are_sent_again() {
    let url = start_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let prompts = write_prompts(dir.path(), &["one-per-connection"]);
    let report = run_benchmark(args(&[
        "--base-url",
        &url,
        "--model",
        "m",
        "--dataset",
        "jsonl",
        "--dataset-path",
        &prompts,
        "--num-prompts",
        "6",
        "--max-concurrency",
        "1",
        "--warmup",
        "0",
        "--no-progress",
    ]))
    .expect("the benchmark runs");
    let point = &report.points[0];
    assert_eq!(point.summary.failed, 0, "{:?}", point.summary.notes());
    // The first request opens the connection; each later one goes out on the
    // connection the server is closing, and is sent again on a new one.
    let resends: Vec<usize> = point.requests.iter().map(|r| r.resends).collect();
    assert_eq!(resends, [0, 1, 1, 1, 1, 1]);
    assert_eq!(point.summary.resent, 5);
    assert!(point.requests.iter().all(|r| r.output_tokens == TOKENS));
}
