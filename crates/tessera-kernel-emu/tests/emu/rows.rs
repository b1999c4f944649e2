//! The row kernels (`embedding.cu`, `norm.cu`, `activation.cu`) against f64
//! references, with the backend's launches. Widths are chosen off the block
//! size so the last threads of a block have less (or no) work.

use tessera_kernel_emu::{Arg, Job};
use tessera_kernel_launch::Launch;

use super::support::{assert_bf16_close, from_bf16, run_all, Rng};

const EPS: f32 = 1e-5;

#[test]
fn embedding_gathers_rows_in_both_load_paths_and_zeros_ids_past_the_table() {
    // 40 columns take the 16-byte loads, 36 the scalar path.
    for hidden in [40usize, 36] {
        let vocab = 7;
        let mut rng = Rng::new(hidden as u64);
        let table = rng.bf16s(vocab * hidden, 2.0);
        let ids: Vec<u32> = vec![3, 0, 6, 3, 9];
        let mut job = Job::new();
        let out = job.filled::<f32>(ids.len() * hidden, 0xff);
        let (t, i) = (job.buffer(&table), job.buffer(&ids));
        let args = [
            Arg::Buf(out),
            Arg::Buf(t),
            Arg::Buf(i),
            Arg::Int(hidden as i32),
            Arg::Int(vocab as i32),
        ];
        job.launch(
            "embedding_gather_bf16",
            Launch::rows(ids.len()).unwrap(),
            &args,
        );
        let got = run_all(&job).get::<f32>(out);
        for (r, &id) in ids.iter().enumerate() {
            for c in 0..hidden {
                let want = if (id as usize) < vocab {
                    from_bf16(table[id as usize * hidden + c])
                } else {
                    0.0
                };
                assert_eq!(
                    got[r * hidden + c].to_bits(),
                    want.to_bits(),
                    "hidden {hidden} row {r} col {c}"
                );
            }
        }
    }
}

#[test]
fn gather_rows_copies_the_chosen_rows() {
    let (rows, cols) = (5, 300);
    let x = Rng::new(1).bf16s(rows * cols, 1.0);
    let pick: Vec<u32> = vec![4, 1, 1];
    let mut job = Job::new();
    let out = job.filled::<u16>(pick.len() * cols, 0xff);
    let (xb, pb) = (job.buffer(&x), job.buffer(&pick));
    let args = [
        Arg::Buf(out),
        Arg::Buf(xb),
        Arg::Buf(pb),
        Arg::Int(cols as i32),
    ];
    job.launch("gather_rows_bf16", Launch::rows(pick.len()).unwrap(), &args);
    let got = run_all(&job).get::<u16>(out);
    for (r, &p) in pick.iter().enumerate() {
        assert_eq!(
            &got[r * cols..(r + 1) * cols],
            &x[p as usize * cols..(p as usize + 1) * cols],
            "row {r}"
        );
    }
}

/// `x / sqrt(mean(x^2) + eps) * w` in f64.
fn rms_norm_ref(x: &[f64], w: &[f32]) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let rms = (ms + f64::from(EPS)).sqrt();
    x.iter()
        .zip(w)
        .map(|(v, &g)| v / rms * f64::from(g))
        .collect()
}

#[test]
fn rms_norm_matches_the_f64_reference() {
    let (rows, n) = (3, 300);
    let mut rng = Rng::new(2);
    let (x, w) = (rng.vec(rows * n, 3.0), rng.vec(n, 1.5));
    let mut job = Job::new();
    let out = job.filled::<u16>(rows * n, 0xff);
    let (xb, wb) = (job.buffer(&x), job.buffer(&w));
    let args = [
        Arg::Buf(out),
        Arg::Buf(xb),
        Arg::Buf(wb),
        Arg::Int(n as i32),
        Arg::Float(EPS),
    ];
    job.launch("rms_norm_f32_bf16", Launch::rows(rows).unwrap(), &args);
    let got = run_all(&job).get::<u16>(out);
    for r in 0..rows {
        let row: Vec<f64> = x[r * n..(r + 1) * n]
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        assert_bf16_close(
            &format!("row {r}"),
            &got[r * n..(r + 1) * n],
            &rms_norm_ref(&row, &w),
        );
    }
}

#[test]
fn add_rms_norm_updates_the_residual_and_normalizes_it() {
    let (rows, n) = (4, 520);
    let mut rng = Rng::new(3);
    let residual = rng.vec(rows * n, 2.0);
    let (x, w) = (rng.bf16s(rows * n, 2.0), rng.vec(n, 1.0));
    let mut job = Job::new();
    let out = job.filled::<u16>(rows * n, 0xff);
    let (rb, xb, wb) = (job.buffer(&residual), job.buffer(&x), job.buffer(&w));
    let args = [
        Arg::Buf(out),
        Arg::Buf(rb),
        Arg::Buf(xb),
        Arg::Buf(wb),
        Arg::Int(n as i32),
        Arg::Float(EPS),
    ];
    job.launch("add_rms_norm_f32_bf16", Launch::rows(rows).unwrap(), &args);
    let result = run_all(&job);
    let (got, new_residual) = (result.get::<u16>(out), result.get::<f32>(rb));
    for r in 0..rows {
        // One f32 addition: the f64 sum of two f32 is exact, rounded once.
        let sum: Vec<f64> = (r * n..(r + 1) * n)
            .map(|i| f64::from(residual[i]) + f64::from(from_bf16(x[i])))
            .collect();
        for (i, s) in sum.iter().enumerate() {
            assert_eq!(
                new_residual[r * n + i],
                *s as f32,
                "residual row {r} col {i}"
            );
        }
        assert_bf16_close(
            &format!("row {r}"),
            &got[r * n..(r + 1) * n],
            &rms_norm_ref(&sum, &w),
        );
    }
}

#[test]
fn head_rms_norm_normalizes_only_the_named_heads() {
    // 6 heads need 2 blocks of 4 warps: the last block's 2 idle warps return
    // at once and must leave the block's barriers.
    let (rows, head_dim, total_heads, offset, heads) = (3, 48, 9, 2, 6);
    let cols = total_heads * head_dim;
    let mut rng = Rng::new(4);
    let (x, w) = (rng.bf16s(rows * cols, 2.0), rng.vec(head_dim, 1.0));
    let mut job = Job::new();
    let (xb, wb) = (job.buffer(&x), job.buffer(&w));
    let args = [
        Arg::Buf(xb),
        Arg::Buf(wb),
        Arg::Int(cols as i32),
        Arg::Int(offset as i32),
        Arg::Int(heads as i32),
        Arg::Int(head_dim as i32),
        Arg::Float(EPS),
    ];
    job.launch(
        "head_rms_norm_bf16",
        Launch::head_rms_norm(rows, heads).unwrap(),
        &args,
    );
    let got = run_all(&job).get::<u16>(xb);
    for r in 0..rows {
        for h in 0..total_heads {
            let at = r * cols + h * head_dim;
            let (g, before) = (&got[at..at + head_dim], &x[at..at + head_dim]);
            if (offset..offset + heads).contains(&h) {
                let v: Vec<f64> = before.iter().map(|&b| f64::from(from_bf16(b))).collect();
                assert_bf16_close(&format!("row {r} head {h}"), g, &rms_norm_ref(&v, &w));
            } else {
                assert_eq!(g, before, "row {r} head {h} is outside the range");
            }
        }
    }
}

/// A gated activation kernel of the fused gate|up against `act(g) * u` in f64.
fn check_gated(kernel: &str, seed: u64, act: impl Fn(f64) -> f64) {
    let (rows, inter) = (3, 300);
    let gate_up = Rng::new(seed).bf16s(rows * 2 * inter, 4.0);
    let mut job = Job::new();
    let out = job.filled::<u16>(rows * inter, 0xff);
    let gb = job.buffer(&gate_up);
    job.launch(
        kernel,
        Launch::silu_mul(rows, inter).unwrap(),
        &[Arg::Buf(out), Arg::Buf(gb), Arg::Int(inter as i32)],
    );
    let got = run_all(&job).get::<u16>(out);
    let want: Vec<f64> = (0..rows * inter)
        .map(|i| {
            let (r, c) = (i / inter, i % inter);
            let g = f64::from(from_bf16(gate_up[r * 2 * inter + c]));
            let u = f64::from(from_bf16(gate_up[r * 2 * inter + inter + c]));
            act(g) * u
        })
        .collect();
    assert_bf16_close(kernel, &got, &want);
}

#[test]
fn silu_mul_matches_the_f64_reference() {
    check_gated("silu_mul_bf16", 5, |g| g / (1.0 + (-g).exp()));
}

#[test]
fn gelu_tanh_mul_matches_the_f64_reference() {
    check_gated("gelu_tanh_mul_bf16", 6, |g| {
        let inner = (2.0 / std::f64::consts::PI).sqrt() * (g + 0.044715 * g * g * g);
        0.5 * g * (1.0 + inner.tanh())
    });
}

#[test]
fn add_normed_rms_norm_norms_the_output_before_the_add() {
    let (rows, n) = (3, 520);
    let mut rng = Rng::new(7);
    let residual = rng.vec(rows * n, 2.0);
    let x = rng.bf16s(rows * n, 3.0);
    let (post, w) = (rng.vec(n, 1.5), rng.vec(n, 1.0));
    let mut job = Job::new();
    let out = job.filled::<u16>(rows * n, 0xff);
    let (rb, xb) = (job.buffer(&residual), job.buffer(&x));
    let (pb, wb) = (job.buffer(&post), job.buffer(&w));
    let args = [
        Arg::Buf(out),
        Arg::Buf(rb),
        Arg::Buf(xb),
        Arg::Buf(pb),
        Arg::Buf(wb),
        Arg::Int(n as i32),
        Arg::Float(EPS),
    ];
    job.launch(
        "add_normed_rms_norm_f32_bf16",
        Launch::rows(rows).unwrap(),
        &args,
    );
    let result = run_all(&job);
    let (got, new_residual) = (result.get::<u16>(out), result.get::<f32>(rb));
    for r in 0..rows {
        let xs: Vec<f64> = (r * n..(r + 1) * n)
            .map(|i| f64::from(from_bf16(x[i])))
            .collect();
        let sum: Vec<f64> = rms_norm_ref(&xs, &post)
            .iter()
            .zip(&residual[r * n..(r + 1) * n])
            .map(|(v, &res)| f64::from(res) + v)
            .collect();
        for (i, s) in sum.iter().enumerate() {
            let g = f64::from(new_residual[r * n + i]);
            assert!(
                (g - s).abs() <= 1e-5 * s.abs().max(1.0),
                "residual row {r} col {i}: {g} vs {s}"
            );
        }
        assert_bf16_close(
            &format!("row {r}"),
            &got[r * n..(r + 1) * n],
            &rms_norm_ref(&sum, &w),
        );
    }
}

#[test]
fn scale_and_softcap_apply_to_every_f32_value() {
    let (rows, cols) = (3, 300);
    let x = Rng::new(8).vec(rows * cols, 5.0);
    for (kernel, value) in [("scale_f32", 16.0f32), ("softcap_f32", 2.0)] {
        let mut job = Job::new();
        let xb = job.buffer(&x);
        job.launch(
            kernel,
            Launch::silu_mul(rows, cols).unwrap(),
            &[Arg::Buf(xb), Arg::Int(cols as i32), Arg::Float(value)],
        );
        let got = run_all(&job).get::<f32>(xb);
        for (i, (&g, &v)) in got.iter().zip(&x).enumerate() {
            let v = f64::from(v);
            let value = f64::from(value);
            let want = match kernel {
                "scale_f32" => v * value,
                _ => (v / value).tanh() * value,
            };
            assert!(
                (f64::from(g) - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{kernel} {i}: {g} vs {want}"
            );
        }
    }
}
