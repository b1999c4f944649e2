//! The attention kernels against a float64 reference, on random shapes.

use proptest::prelude::*;

use half::f16;

use super::kernel::{attend, attend_portable, HeadGroup, KvValue};

/// Attention in f64, the textbook way, on the stored values.
fn reference<T: KvValue>(g: &HeadGroup<T>) -> Vec<f64> {
    let d = g.head_dim;
    let mut out = Vec::new();
    for q in g.q.chunks(d) {
        let scores: Vec<f64> = g
            .rows
            .iter()
            .map(|&r| {
                let k = &g.k_pool[r..r + d];
                q.iter()
                    .zip(k)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b.to_f32()))
                    .sum::<f64>()
                    * f64::from(g.scale)
            })
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let denom: f64 = exps.iter().sum();
        for i in 0..d {
            out.push(
                g.rows
                    .iter()
                    .zip(&exps)
                    .map(|(&r, e)| e / denom * f64::from(g.v_pool[r + i].to_f32()))
                    .sum(),
            );
        }
    }
    out
}

fn values(seed: u64, n: usize, amplitude: f32) -> Vec<f32> {
    // A small LCG: reproducible inputs without threading an RNG through proptest.
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amplitude
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Both kernels (the SIMD one where the CPU has it) agree with the
    /// reference within float tolerance, for supported and unsupported head
    /// sizes, any group size, and keys scattered over a pool.
    #[test]
    fn kernels_match_the_reference(
        head_dim in prop::sample::select(vec![8usize, 48, 64, 128]),
        heads in 1usize..5,
        keys in 1usize..70,
        slots in 70usize..140,
        seed in any::<u64>(),
    ) {
        let q = values(seed, heads * head_dim, 1.0);
        let k_pool = values(seed ^ 1, slots * head_dim, 2.0);
        let v_pool = values(seed ^ 2, slots * head_dim, 1.0);
        // Distinct slots in a scrambled order, as a block table gives them.
        let rows: Vec<usize> = (0..keys).map(|j| (j * 37 + seed as usize % 13) % slots * head_dim).collect();
        let g = HeadGroup { q: &q, rows: &rows, k_pool: &k_pool, v_pool: &v_pool, head_dim, scale: 0.125 };
        check_kernels(&g)?;
        // The same keys and values stored as f16.
        let (k16, v16) = (to_f16(&k_pool), to_f16(&v_pool));
        let g = HeadGroup { q: &q, rows: &rows, k_pool: &k16, v_pool: &v16, head_dim, scale: 0.125 };
        check_kernels(&g)?;
    }
}

fn to_f16(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

/// Both kernels against the reference on the values as stored.
fn check_kernels<T: KvValue>(g: &HeadGroup<T>) -> Result<(), TestCaseError> {
    let want = reference(g);
    let mut scores = Vec::new();
    for portable in [true, false] {
        let mut out = vec![f32::NAN; g.q.len()];
        if portable {
            attend_portable(g, &mut scores, &mut out);
        } else {
            attend(g, &mut scores, &mut out);
        }
        for (i, (&o, &w)) in out.iter().zip(&want).enumerate() {
            prop_assert!(
                (f64::from(o) - w).abs() < 1e-5,
                "portable {portable}: out[{i}] = {o}, want {w}"
            );
        }
    }
    Ok(())
}

/// The same inputs give the same bits, whatever ran before on the scratch.
#[test]
fn results_do_not_depend_on_the_scratch_space() {
    let (d, heads, slots) = (64, 3, 40);
    let q = values(7, heads * d, 1.0);
    let (k_pool, v_pool) = (values(8, slots * d, 1.0), values(9, slots * d, 1.0));
    let rows: Vec<usize> = (0..slots).rev().map(|j| j * d).collect();
    let g = HeadGroup {
        q: &q,
        rows: &rows,
        k_pool: &k_pool,
        v_pool: &v_pool,
        head_dim: d,
        scale: 0.125,
    };
    let (mut fresh, mut used) = (Vec::new(), vec![1e30f32; 1000]);
    let (mut a, mut b) = (vec![0f32; heads * d], vec![0f32; heads * d]);
    attend(&g, &mut fresh, &mut a);
    attend(&g, &mut used, &mut b);
    assert_eq!(a, b);
}
