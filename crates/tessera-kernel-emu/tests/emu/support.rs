//! What every kernel test shares: running a job under every driver, bf16,
//! seeded inputs and tolerant comparisons.

use half::bf16;
use tessera_kernel_emu::{run, Job, Output, Variant};

/// Runs `job` plain, under ThreadSanitizer and under AddressSanitizer +
/// UBSan; every run must succeed with the same bits (the kernels' results
/// depend neither on thread timing nor on block order). The plain output.
/// `TESSERA_EMU_SANITIZERS=0` skips the sanitizers (a quicker local loop;
/// the timings in kernels/README.md compare the two).
pub fn run_all(job: &Job) -> Output {
    let plain = run(job, Variant::Plain).unwrap_or_else(|e| panic!("{e}"));
    if std::env::var("TESSERA_EMU_SANITIZERS").is_ok_and(|v| v == "0") {
        return plain;
    }
    for v in [Variant::Tsan, Variant::Asan] {
        let out = run(job, v).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out == plain,
            "{v:?} computed other bits than the plain build"
        );
    }
    plain
}

/// A small seeded generator (xorshift64*): inputs repeat from run to run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((x >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        ((self.uniform() + 1.0) * 0.5 * n as f32) as usize % n
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }

    /// `n` bf16 bit patterns of values in [-scale, scale).
    pub fn bf16s(&mut self, n: usize, scale: f32) -> Vec<u16> {
        (0..n).map(|_| to_bf16(self.uniform() * scale)).collect()
    }
}

/// f32 -> bf16 bits, round to nearest even (the `half` crate's, not the
/// kernels' own bit arithmetic).
pub fn to_bf16(x: f32) -> u16 {
    bf16::from_f32(x).to_bits()
}

pub fn from_bf16(b: u16) -> f32 {
    bf16::from_bits(b).to_f32()
}

/// Asserts a bf16 result is the f64 reference up to bf16's rounding (half an
/// ulp, 2^-9 relative) and the f32 arithmetic before it.
pub fn assert_bf16_close(what: &str, got: &[u16], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = f64::from(from_bf16(g));
        let tol = w.abs() * (1.0 / 256.0) + 1e-5;
        assert!((g - w).abs() <= tol, "{what}[{i}]: {g} vs reference {w}");
    }
}
