//! The CUDA backend on a GPU: every operation against the CPU backend on
//! fresh random inputs (`ops`, `attention`), and whole random-weight Llama and
//! Qwen2 models against the CPU, batch invariance and greedy decoding
//! (`model`).
//!
//! Needs a GPU: without one every test prints that it was skipped, unless
//! `TESSERA_REQUIRE_CUDA=1` (`common/cuda.rs`; scripts/gpu-check sets it).
//! New tensors are poisoned with NaN, so an element a kernel leaves unwritten
//! fails its comparison. Inputs are drawn from a fresh seed every run, printed
//! by each test; `TESSERA_TEST_SEED=N` repeats a run.
#![cfg(feature = "cuda")]

#[path = "../common/mod.rs"]
mod common;

mod attention;
mod model;
mod ops;

/// Error bound for outputs of bf16 operands against a reference in higher
/// precision (between 1e-3 and 1e-2).
const BF16_TOL: f64 = 1e-2;

/// A fresh seed per run (or `TESSERA_TEST_SEED`), printed for a repeat.
fn seed(test: &str) -> u64 {
    let s = std::env::var("TESSERA_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("{test}: TESSERA_TEST_SEED={s}");
    s
}
