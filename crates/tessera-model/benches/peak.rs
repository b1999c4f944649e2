//! The throughput ceiling of the instructions the CPU kernels are built on:
//! nanoseconds per `vpdpbusd` (256- and 512-bit) and per 256-bit FMA, each
//! issued in twelve independent chains so that only throughput, not latency,
//! limits them. A kernel's time per call over its count of these
//! instructions says how close it runs to the machine (BENCHMARKS.md).
//!
//! `cargo bench -p tessera-model --bench peak`

use std::time::Instant;

/// Instructions per chain per measurement.
const ROUNDS: usize = 50_000_000;
/// Independent accumulators, more than any latency x throughput product.
const CHAINS: usize = 12;

fn main() {
    #[cfg(target_arch = "x86_64")]
    x86::run();
    #[cfg(not(target_arch = "x86_64"))]
    println!("peak: only x86-64 is measured");
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    pub fn run() {
        let vnni = is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512bw");
        let fma = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        for _ in 0..2 {
            if vnni {
                // SAFETY (both): the features were detected above.
                report("vpdpbusd ymm", || unsafe { dpbusd_ymm() });
                report("vpdpbusd zmm", || unsafe { dpbusd_zmm() });
            }
            if fma {
                // SAFETY: the features were detected above.
                report("vfmadd ymm", || unsafe { fma_ymm() });
            }
        }
        if !vnni && !fma {
            println!("peak: neither AVX-512 VNNI nor AVX2+FMA here");
        }
    }

    /// Times `op` (which returns a value derived from every chain, so none
    /// is optimized away) and prints ns per instruction.
    fn report(name: &str, op: impl Fn() -> i64) {
        let start = Instant::now();
        let keep = std::hint::black_box(op());
        let ns = start.elapsed().as_secs_f64() * 1e9 / (ROUNDS * CHAINS) as f64;
        println!("{name}: {ns:.3} ns per instruction (checksum {keep})");
    }

    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn dpbusd_ymm() -> i64 {
        let (a, b) = (
            _mm256_set1_epi8(3),
            std::hint::black_box(_mm256_set1_epi8(5)),
        );
        let mut acc = [_mm256_setzero_si256(); CHAINS];
        for _ in 0..ROUNDS {
            for c in acc.iter_mut() {
                *c = _mm256_dpbusd_epi32(*c, a, b);
            }
        }
        acc.iter()
            .map(|c| i64::from(_mm256_extract_epi32::<0>(*c)))
            .sum()
    }

    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn dpbusd_zmm() -> i64 {
        let (a, b) = (
            _mm512_set1_epi8(3),
            std::hint::black_box(_mm512_set1_epi8(5)),
        );
        let mut acc = [_mm512_setzero_si512(); CHAINS];
        for _ in 0..ROUNDS {
            for c in acc.iter_mut() {
                *c = _mm512_dpbusd_epi32(*c, a, b);
            }
        }
        acc.iter()
            .map(|c| i64::from(_mm256_extract_epi32::<0>(_mm512_castsi512_si256(*c))))
            .sum()
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn fma_ymm() -> i64 {
        let (a, b) = (
            _mm256_set1_ps(0.999),
            std::hint::black_box(_mm256_set1_ps(1e-3)),
        );
        let mut acc = [_mm256_setzero_ps(); CHAINS];
        for _ in 0..ROUNDS {
            for c in acc.iter_mut() {
                *c = _mm256_fmadd_ps(*c, a, b);
            }
        }
        acc.iter().map(|c| _mm256_cvtss_f32(*c) as i64).sum()
    }
}
