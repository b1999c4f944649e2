//! deploy/kubernetes, checked offline by tests/deploy/check_manifests.py with
//! .venv's Python (scripts/python-env installs kubernetes-validate, which
//! bundles the Kubernetes schemas): every object against the Kubernetes
//! schemas, every custom resource field by field, and the pieces against each
//! other and against a real scrape of tessera's `/metrics` (the metric names
//! the autoscaling queries and the inference router read must be in it).
//! Then the same check on deliberately broken copies, each of which must fail.

mod common;

use std::path::Path;
use std::process::Command;

use common::{request, MODEL};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `/metrics` of a server over the default model, with the default options.
fn scrape() -> String {
    let models = common::models();
    common::register(&models, MODEL, &common::engine_args("16MiB", 64));
    let addr = common::serve(models, 1 << 20);
    let r = request(addr, "GET", "/metrics", b"");
    assert_eq!(r.status, 200);
    r.text()
}

fn check(python: &str, metrics: &Path, extra: &[&str]) {
    let status = Command::new(python)
        .arg(Path::new(ROOT).join("tests/deploy/check_manifests.py"))
        .arg(ROOT)
        .arg("--metrics")
        .arg(metrics)
        .args(extra)
        .status()
        .expect("check_manifests.py runs");
    assert!(status.success(), "check_manifests.py {extra:?} failed");
}

#[test]
fn kubernetes_manifests_validate_and_agree_with_tessera() {
    let python = common::python();
    let metrics = std::env::temp_dir().join(format!("tessera-metrics-{}.txt", std::process::id()));
    std::fs::write(&metrics, scrape()).expect("write the scrape");
    check(&python, &metrics, &[]);
    check(&python, &metrics, &["--self-test"]);
    std::fs::remove_file(&metrics).expect("cleanup");
}
