//! `exp` eight lanes at a time, for the softmax of attention and for SiLU,
//! which together called libm's `expf` ~6 million times per 64-row decode
//! step of the default model.
//!
//! Cephes' single-precision method: `exp(x) = 2^n * exp(r)` with `n` the
//! nearest integer to `x / ln 2`, `r = x - n ln 2` (in two parts, exactly
//! enough), and a degree-6 polynomial for `exp(r)` on `|r| <= ln 2 / 2`:
//! within 2 ulp of the true value (a test) for results above f32's smallest
//! normal. Inputs are clamped to +-88.38, so the result is finite, or 0 for
//! the most negative inputs; NaN gives NaN.
//! The scalar fallback runs the same steps with the same roundings.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const LIMIT: f32 = 88.376_26;
const P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_2e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5e-1,
];

/// `exp(x)` by the method above, one value (the reference of the SIMD path).
pub fn exp_scalar(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let x = x.clamp(-LIMIT, LIMIT);
    let n = x.mul_add(LOG2E, 0.5).floor();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let z = r * r;
    let mut p = P[0];
    for c in &P[1..] {
        p = p.mul_add(r, *c);
    }
    let y = p.mul_add(z, r) + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `xs[i] = exp(xs[i])`, eight lanes at a time where the CPU allows.
pub fn exp_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: AVX2 and FMA are present.
        unsafe { avx2::exp_in_place(xs) };
        return;
    }
    for x in xs {
        *x = exp_scalar(*x);
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::*;
    use std::sync::OnceLock;

    /// Whether this CPU has AVX2 and FMA (checked once).
    pub fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE
            .get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }

    /// `exp` of eight lanes, as [`exp_scalar`] computes each.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub unsafe fn exp8(x: __m256) -> __m256 {
        let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-LIMIT)),
            _mm256_set1_ps(LIMIT),
        );
        let n = _mm256_floor_ps(_mm256_fmadd_ps(
            x,
            _mm256_set1_ps(LOG2E),
            _mm256_set1_ps(0.5),
        ));
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), x);
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
        let z = _mm256_mul_ps(r, r);
        let mut p = _mm256_set1_ps(P[0]);
        for c in &P[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        let y = _mm256_add_ps(_mm256_fmadd_ps(p, z, r), _mm256_set1_ps(1.0));
        let pow2n = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvttps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        let e = _mm256_mul_ps(y, _mm256_castsi256_ps(pow2n));
        // NaN in, NaN out (the clamp above replaced it).
        _mm256_blendv_ps(e, _mm256_set1_ps(f32::NAN), nan)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_in_place(xs: &mut [f32]) {
        let mut chunks = xs.chunks_exact_mut(8);
        for c in &mut chunks {
            let v = exp8(_mm256_loadu_ps(c.as_ptr()));
            _mm256_storeu_ps(c.as_mut_ptr(), v);
        }
        for x in chunks.into_remainder() {
            *x = exp_scalar(*x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn close_to_f64_exp_across_the_range() {
        let mut worst = 0;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (f64::from(x)).exp() as f32;
            worst = worst.max(ulps(exp_scalar(x), want));
            x += 0.0137;
        }
        assert!(worst <= 2, "worst error {worst} ulp");
        assert_eq!(exp_scalar(0.0), 1.0);
        assert!(exp_scalar(f32::NAN).is_nan());
        assert!((0.0..1e-37).contains(&exp_scalar(-1e6)));
        assert!(exp_scalar(1e6).is_finite());
    }

    #[test]
    fn simd_lanes_equal_the_scalar_steps() {
        let mut xs: Vec<f32> = (0..10_001).map(|i| (i as f32 - 5000.0) * 0.0191).collect();
        xs.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            88.5,
            -88.5,
            1e-30,
        ]);
        let mut fast = xs.clone();
        exp_in_place(&mut fast);
        for (x, f) in xs.iter().zip(&fast) {
            let s = exp_scalar(*x);
            assert!(
                f.to_bits() == s.to_bits() || (f.is_nan() && s.is_nan()),
                "exp({x}): simd {f}, scalar {s}"
            );
        }
    }
}
