//! The AVX2 + FMA attention kernel, for head sizes 64 and 128.
//!
//! Scores: each K row is read once for all query heads of its group, and each
//! head's dot product runs in two FMA chains. Values: one head at a time, its
//! output held in registers across the keys. Each head is computed start to
//! end in position order, as in the portable kernel.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::kernel::{softmax, HeadGroup, KvValue};

/// Whether this CPU has AVX2, FMA and F16C (checked once).
pub(super) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

/// Runs the kernel if it supports the head size; false if it does not.
pub(super) fn attend<T: KvValue>(g: &HeadGroup<T>, scores: &mut Vec<f32>, out: &mut [f32]) -> bool {
    // SAFETY (both): `available()` was checked by the caller.
    match g.head_dim {
        64 => unsafe { attend_fixed::<8, T>(g, scores, out) },
        128 => unsafe { attend_fixed::<16, T>(g, scores, out) },
        _ => return false,
    }
    true
}

/// `C` is the head size in 8-float vectors.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn attend_fixed<const C: usize, T: KvValue>(
    g: &HeadGroup<T>,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let d = 8 * C;
    let heads = g.q.len() / d;
    let n = g.rows.len();
    // Every pointer offset below is within these bounds.
    assert!(g.head_dim == d && out.len() == heads * d && heads * d == g.q.len());
    assert!(g
        .rows
        .iter()
        .all(|&r| r + d <= g.k_pool.len() && r + d <= g.v_pool.len()));

    scores.clear();
    scores.resize(heads * n, 0.0);
    let q = g.q.as_ptr();
    for (j, &r) in g.rows.iter().enumerate() {
        // Widened once, used by every head of the group.
        let k_ptr = g.k_pool.as_ptr().add(r);
        let k: [__m256; C] = std::array::from_fn(|c| T::load8(k_ptr.add(8 * c)));
        for h in 0..heads {
            let qh = q.add(h * d);
            let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            for c in (0..C).step_by(2) {
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qh.add(8 * c)), k[c], a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qh.add(8 * c + 8)), k[c + 1], a1);
            }
            scores[h * n + j] = horizontal_sum(_mm256_add_ps(a0, a1)) * g.scale;
        }
    }
    for (h, o) in out.chunks_exact_mut(d).enumerate() {
        let p = &mut scores[h * n..(h + 1) * n];
        softmax(p);
        let mut acc = [_mm256_setzero_ps(); C];
        for (&r, &w) in g.rows.iter().zip(p.iter()) {
            let v = g.v_pool.as_ptr().add(r);
            let w = _mm256_set1_ps(w);
            for (c, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(w, T::load8(v.add(8 * c)), *a);
            }
        }
        for (c, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(o.as_mut_ptr().add(8 * c), *a);
        }
    }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn horizontal_sum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}
