//! The soak's short version: `scripts/soak` drives the real binary for a few
//! seconds of mixed traffic (streams, n > 1, stop strings, clients leaving
//! mid-stream, malformed requests, bursts over the queue limit) and fails
//! unless every request is accounted for, no KV block is left held, resident
//! memory stays within 5% of its level after warm-up and nothing panicked.

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn a_short_soak_leaks_nothing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(common::python())
        .arg(root.join("scripts/soak"))
        .args(["--binary", env!("CARGO_BIN_EXE_tessera")])
        .args(["--duration", "8", "--warmup", "4", "--clients", "3"])
        .output()
        .expect("scripts/soak runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("the soak's report");
    assert_eq!(report["leaked_kv_blocks"], 0.0, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
}
