//! `--device` as a process sees it, on a machine without a GPU (CI): `cuda`
//! fails start-up with an error that says what is missing (the `cuda` feature,
//! or the driver), never a panic; `auto` runs on the CPU and says why. On a
//! machine with a CUDA driver `auto` runs on the GPU, and the refusals are not
//! checked (`crates/tessera-model/tests/cuda_backend/` covers the GPU).

use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `tessera generate ARGS` with only `env` as TESSERA_* variables.
fn generate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.arg("generate").args(args).current_dir(ROOT);
    for (k, _) in std::env::vars() {
        if k.starts_with("TESSERA_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_BACKTRACE", "0").envs(env.iter().copied());
    cmd.output().expect("tessera runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether this build can reach a CUDA driver (then a GPU may be there).
#[cfg(feature = "cuda")]
fn has_cuda_driver() -> bool {
    tessera_model::cuda::CudaLibrary::Driver.is_loadable()
}

#[cfg(not(feature = "cuda"))]
fn has_cuda_driver() -> bool {
    false
}

/// What a failed `--device cuda` must say on this build and machine.
fn assert_cuda_refused(out: &Output, spec: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(&format!("--device {spec}: ")), "{err}");
    if cfg!(feature = "cuda") {
        assert!(err.contains("libcuda.so.1"), "{err}");
    } else {
        assert!(err.contains("--features cuda"), "{err}");
    }
}

#[test]
fn cuda_without_cuda_is_a_clear_error() {
    if has_cuda_driver() {
        eprintln!("skipped: a CUDA driver is present");
        return;
    }
    // Refused before any model is looked at.
    let out = generate(
        &[
            "--device",
            "cuda",
            "--model",
            "/nonexistent",
            "--prompt",
            "hi",
        ],
        &[],
    );
    assert_cuda_refused(&out, "cuda:0");
    let out = generate(
        &["--model", "/nonexistent", "--prompt", "hi"],
        &[("TESSERA_DEVICE", "cuda:1")],
    );
    assert_cuda_refused(&out, "cuda:1");
}

#[test]
fn a_bad_device_is_a_usage_error() {
    let out = generate(&["--device", "tpu", "--prompt", "hi"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("use cpu, cuda, cuda:N"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_bad_gpu_memory_utilization_is_a_usage_error() {
    for bad in ["0", "1.5", "most"] {
        let out = generate(&["--gpu-memory-utilization", bad, "--prompt", "hi"], &[]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("--gpu-memory-utilization"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn auto_falls_back_to_the_cpu_and_says_why() {
    let out = generate(
        &["--device", "auto", "--prompt", "Hi", "--max-tokens", "2"],
        &[],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    if has_cuda_driver() && err.contains("tessera: device cuda:") {
        return; // a GPU machine: auto chose it
    }
    assert!(err.contains("tessera: device cpu (auto: "), "{err}");
    if cfg!(feature = "cuda") {
        assert!(err.contains("libcuda.so.1"), "{err}");
    } else {
        assert!(err.contains("built without the cuda feature"), "{err}");
    }
}
