//! `rotary.cu`: Q and K rotated in place, K and V written to the token's
//! slot, in both pair layouts; a token past the table is skipped.

use tessera_kernel_emu::{Arg, Job};
use tessera_kernel_launch::Launch;

use super::support::{from_bf16, run_all, Rng};

const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const D: usize = 16;
const MAX_POS: usize = 40;
const SLOTS: usize = 24;

fn check(interleaved: bool) {
    let cols = (HEADS + 2 * KV_HEADS) * D;
    let half = D / 2;
    let (cos, sin): (Vec<f32>, Vec<f32>) = (0..MAX_POS * half)
        .map(|k| {
            let (p, i) = (k / half, k % half);
            let theta = p as f64 * 10000f64.powf(-2.0 * i as f64 / D as f64);
            (theta.cos() as f32, theta.sin() as f32)
        })
        .unzip();
    // The fourth token's position is past the table: skipped.
    let positions: Vec<u32> = vec![0, 17, 39, MAX_POS as u32];
    let slots: Vec<u32> = vec![5, 23, 0, 7];
    let qkv = Rng::new(6).bf16s(positions.len() * cols, 2.0);
    let mut job = Job::new();
    let q = job.buffer(&qkv);
    let (kc, vc) = (
        job.filled::<u16>(SLOTS * KV_HEADS * D, 0xff),
        job.filled::<u16>(SLOTS * KV_HEADS * D, 0xff),
    );
    let (cb, sb) = (job.buffer(&cos), job.buffer(&sin));
    let (pb, slb) = (job.buffer(&positions), job.buffer(&slots));
    let args = [
        Arg::Buf(q),
        Arg::Buf(kc),
        Arg::Buf(vc),
        Arg::Buf(cb),
        Arg::Buf(sb),
        Arg::Buf(pb),
        Arg::Buf(slb),
        Arg::Int(HEADS as i32),
        Arg::Int(KV_HEADS as i32),
        Arg::Int(D as i32),
        Arg::Int(MAX_POS as i32),
        Arg::Int(i32::from(interleaved)),
        Arg::U64(SLOTS as u64),
    ];
    job.launch(
        "rotary_cache_write_bf16",
        Launch::rotary(positions.len()).unwrap(),
        &args,
    );
    let out = run_all(&job);
    let (got, k_cache, v_cache) = (out.get::<u16>(q), out.get::<u16>(kc), out.get::<u16>(vc));

    let mut written = [false; SLOTS];
    for (t, (&pos, &slot)) in positions.iter().zip(&slots).enumerate() {
        let row = &got[t * cols..(t + 1) * cols];
        let before = &qkv[t * cols..(t + 1) * cols];
        if pos as usize >= MAX_POS {
            assert_eq!(row, before, "token {t} past the table is left as it is");
            continue;
        }
        written[slot as usize] = true;
        for head in 0..HEADS + KV_HEADS {
            for i in 0..half {
                let (ia, ib) = if interleaved {
                    (2 * i, 2 * i + 1)
                } else {
                    (i, i + half)
                };
                let (a, b) = (
                    f64::from(from_bf16(before[head * D + ia])),
                    f64::from(from_bf16(before[head * D + ib])),
                );
                let (c, s) = (
                    f64::from(cos[pos as usize * half + i]),
                    f64::from(sin[pos as usize * half + i]),
                );
                // Half a bf16 ulp of the larger product, and f32 rounding.
                let tol = (a * c)
                    .abs()
                    .max((b * s).abs())
                    .max((a * s).abs())
                    .max((b * c).abs())
                    / 128.0
                    + 1e-6;
                for (idx, want) in [(ia, a * c - b * s), (ib, a * s + b * c)] {
                    let g = f64::from(from_bf16(row[head * D + idx]));
                    assert!(
                        (g - want).abs() <= tol,
                        "token {t} head {head} [{idx}]: {g} vs {want}"
                    );
                }
            }
        }
        let k_at = slot as usize * KV_HEADS * D;
        assert_eq!(
            &k_cache[k_at..k_at + KV_HEADS * D],
            &row[HEADS * D..(HEADS + KV_HEADS) * D],
            "K of token {t}"
        );
        assert_eq!(
            &v_cache[k_at..k_at + KV_HEADS * D],
            &before[(HEADS + KV_HEADS) * D..],
            "V of token {t}"
        );
    }
    for (s, w) in written.iter().enumerate() {
        if !w {
            let at = s * KV_HEADS * D;
            assert!(
                k_cache[at..at + KV_HEADS * D].iter().all(|&x| x == 0xffff),
                "slot {s} K untouched"
            );
            assert!(
                v_cache[at..at + KV_HEADS * D].iter().all(|&x| x == 0xffff),
                "slot {s} V untouched"
            );
        }
    }
}

#[test]
fn rotary_neox_pairs_rotate_and_fill_the_slots() {
    check(false);
}

#[test]
fn rotary_interleaved_pairs_rotate_and_fill_the_slots() {
    check(true);
}
