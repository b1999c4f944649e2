//! The CUDA tests' shared helpers: the backend on device 0 (or a skip), and
//! error measures.
//!
//! Without a CUDA device each test prints that it was skipped and passes;
//! with `TESSERA_REQUIRE_CUDA=1` (scripts/gpu-check's command) it fails
//! instead, so a GPU machine that cannot open its GPU is never green.

use std::path::{Path, PathBuf};

use tessera_model::backend::cuda::CudaBackend;
use tessera_model::cuda::libs;
use tessera_model::cuda::ptx_cache::PtxCache;
use tessera_model::cuda::CudaDevice;

/// Environment variable: fail instead of skipping when no GPU opens.
pub const REQUIRE_ENV: &str = "TESSERA_REQUIRE_CUDA";

/// `.venv/lib/python*/site-packages/nvidia/cu13/<sub>` under the
/// repository (CUDA 13.0 from PyPI, installed by scripts/python-env).
fn venv_cu13(sub: &str) -> Option<PathBuf> {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/lib");
    std::fs::read_dir(lib)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/nvidia/cu13").join(sub))
        .find(|d| d.exists())
}

/// NVRTC's directory (and the other libraries', where installed).
pub fn venv_lib_dir() -> Option<PathBuf> {
    venv_cu13("lib")
}

/// `ptxas` of the `nvidia-cuda-nvcc` wheel.
pub fn venv_ptxas() -> Option<PathBuf> {
    venv_cu13("bin/ptxas")
}

/// The CUDA backend on device 0, with new tensors poisoned (NaN until a
/// kernel writes them); `None` (the test is skipped) when no device opens,
/// unless [`REQUIRE_ENV`] is `1`.
pub fn cuda(test: &str) -> Option<CudaBackend> {
    let mut dirs = libs::search_dirs();
    dirs.extend(venv_lib_dir());
    let device = match CudaDevice::open(0, &dirs) {
        Ok(d) => d,
        Err(e) => {
            if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
                panic!("{test}: {REQUIRE_ENV}=1 but no CUDA device opens: {e}");
            }
            eprintln!("{test}: skipped, no CUDA device: {e}");
            return None;
        }
    };
    let cache = PtxCache::new(std::env::temp_dir().join("tessera-cuda-test-ptx"));
    let backend = CudaBackend::new(device, Some(&cache))
        .unwrap_or_else(|e| panic!("{test}: the CUDA backend does not start: {e}"));
    backend.set_poison(true);
    eprintln!("{test}: on {}", backend.device());
    Some(backend)
}

/// `‖got − want‖₂ / ‖want‖₂` in f64; infinite if `got` holds a NaN or the
/// lengths differ.
pub fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() || got.iter().any(|v| v.is_nan()) {
        return f64::INFINITY;
    }
    let (mut diff, mut norm) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        diff += (f64::from(g) - f64::from(w)).powi(2);
        norm += f64::from(w).powi(2);
    }
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

/// Asserts `rel_err(got, want) <= tol`, printing the error either way.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    let e = rel_err(got, want);
    eprintln!("{what}: relative error {e:.2e} (bound {tol:.0e})");
    assert!(e <= tol, "{what}: relative error {e} > {tol}");
}

/// `values` rounded to bf16 (what a bf16 tensor of them holds).
pub fn bf16_round(values: &[f32]) -> Vec<f32> {
    values
        .iter()
        .map(|&v| half::bf16::from_f32(v).to_f32())
        .collect()
}
