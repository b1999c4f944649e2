//! The kernels of `kernels/` run on the CPU (`kernels/emu/`), plain, under
//! ThreadSanitizer and under AddressSanitizer + UBSan, against f64 references
//! on small shapes, with the launch configurations the CUDA backend uses.
//! Every test name starts with `emu::`, so `cargo test emu` in this crate (or
//! `cargo test --workspace emu` at the root) runs exactly them.

#[path = "emu/mod.rs"]
mod emu;
