//! The Containerfile builds with `podman build` (the Debian package), skipped
//! with a message where podman is missing or cannot run at all. It builds the `cpu-prebuilt` target
//! around this test's tessera binary on an empty base (the runtime stages only
//! COPY, so no base image has to be pulled), then checks the image: entry
//! point, non-root user, health check on /health, volumes, environment, the
//! binary and the mount points' owner.
//!
//! Running the image needs a base with glibc and bash: set
//! TESSERA_IMAGE_BASE (e.g. localhost/tessera-base:bookworm, which
//! `scripts/image --local` makes) to also check that, when podman can start
//! containers on the machine, the container becomes healthy, answers a
//! completion, and exits 0 on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .output()
        .expect("podman runs")
}

fn ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A build context holding only the binary, as `scripts/image --local` lays it out.
fn context() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-image-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("empty")).expect("context dir");
    let bin = dir.join("tessera");
    let _ = std::fs::remove_file(&bin);
    if std::fs::hard_link(env!("CARGO_BIN_EXE_tessera"), &bin).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_tessera"), &bin).expect("copy the binary");
    }
    dir
}

/// An image this test built, removed however the test ends.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = podman(&["rmi", "-f", &self.0]);
    }
}

fn build(tag: &str, base: &str, ctx: &Path) -> Image {
    let containerfile = format!("{ROOT}/Containerfile");
    let ctx = ctx.to_str().expect("utf-8 path");
    ok(&[
        "build",
        "--format",
        "docker",
        // No intermediate images left behind.
        "--layers=false",
        "--pull=never",
        "-f",
        &containerfile,
        "--target",
        "cpu-prebuilt",
        "--build-arg",
        &format!("BASE={base}"),
        "--build-arg",
        "PREBUILT_DIR=.",
        "-t",
        tag,
        ctx,
    ]);
    Image(tag.to_string())
}

#[test]
fn the_containerfile_builds_a_non_root_serving_image() {
    if Command::new("podman").arg("--version").output().is_err() {
        eprintln!(
            "SKIPPED: podman is not installed (apt-get install podman); the Containerfile was not built"
        );
        return;
    }
    let info = podman(&["info"]);
    if !info.status.success() {
        eprintln!(
            "SKIPPED: podman is installed but cannot run here ({}); the Containerfile was not built",
            String::from_utf8_lossy(&info.stderr).trim()
        );
        return;
    }
    let ctx = context();
    let tag = format!("localhost/tessera-test:{}", std::process::id());
    let _image = build(&tag, "scratch", &ctx);

    let inspect: Value =
        serde_json::from_str(&ok(&["image", "inspect", &tag])).expect("inspect is JSON");
    let config = &inspect[0]["Config"];
    assert_eq!(config["User"], "10001:10001", "{config}");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/tessera", "serve"])
    );
    // podman keeps the health check beside the config, Docker inside it.
    let health = [&inspect[0]["Healthcheck"], &config["Healthcheck"]]
        .map(|h| h["Test"].to_string())
        .join(" ");
    assert!(health.contains("GET /health"), "{health}");
    for volume in ["/models", "/data"] {
        assert!(
            config["Volumes"].get(volume).is_some(),
            "{volume}: {config}"
        );
    }
    assert!(config["ExposedPorts"].get("8000/tcp").is_some());
    let env = config["Env"].to_string();
    for var in [
        "TESSERA_HOST=0.0.0.0",
        "TESSERA_PORT=8000",
        "HF_HOME=/data/huggingface",
    ] {
        assert!(env.contains(var), "{var}: {env}");
    }

    // The files: the binary, and mount points the user can write.
    let container = ok(&["create", "--pull=never", &tag]).trim().to_string();
    let listing = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "podman export {container} | tar -tv --numeric-owner"
        ))
        .output()
        .expect("export");
    ok(&["rm", &container]);
    let listing = String::from_utf8_lossy(&listing.stdout);
    let line = |path: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" {path}")) || l.ends_with(&format!(" {path}/")))
            .unwrap_or_else(|| panic!("{path} not in the image:\n{listing}"))
            .to_string()
    };
    assert!(line("usr/local/bin/tessera").starts_with("-rwx"));
    for dir in ["models", "data"] {
        assert!(line(dir).contains("10001/10001"), "{}", line(dir));
    }
    if let Ok(base) = std::env::var("TESSERA_IMAGE_BASE") {
        run_on(&base, &ctx);
    }
    std::fs::remove_dir_all(&ctx).expect("cleanup");
}

/// Builds on `base` and, where podman can start containers, serves the
/// default model from the image.
fn run_on(base: &str, ctx: &Path) {
    let tag = format!("localhost/tessera-test-run:{}", std::process::id());
    let _image = build(&tag, base, ctx);
    let probe = podman(&["run", "--rm", "--pull=never", base, "true"]);
    if !probe.status.success() {
        eprintln!(
            "SKIPPED running the image: podman cannot start containers here: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
        return;
    }
    let models = format!("{ROOT}/models:/models:ro");
    let id = ok(&[
        "run",
        "-d",
        "--pull=never",
        "-p",
        "127.0.0.1::8000",
        "-v",
        &models,
        &tag,
    ])
    .trim()
    .to_string();
    let port = ok(&["port", &id, "8000"]);
    let addr = port.trim().rsplit(':').next().expect("port").to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !podman(&["healthcheck", "run", &id]).status.success() {
        assert!(
            Instant::now() < deadline,
            "never healthy: {}",
            ok(&["logs", &id])
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let url = format!("http://127.0.0.1:{addr}/v1/completions");
    let out = Command::new("curl")
        .args(["-sf", &url, "-H", "Content-Type: application/json"])
        .args(["-d", r#"{"prompt": "Hello", "max_tokens": 4}"#])
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "completion failed: {}",
        ok(&["logs", &id])
    );
    ok(&["stop", "-t", "60", &id]);
    let code = ok(&["inspect", "--format", "{{.State.ExitCode}}", &id]);
    assert_eq!(code.trim(), "0", "SIGTERM drains and exits 0");
    ok(&["rm", &id]);
}
