//! Activations quantized to 8 bits per value, 32 values per block, as candle's
//! `BlockQ8_0::from_float` and `BlockQ8_1::from_float` do (Q8_1 adds `s`).

use half::f16;
use rayon::prelude::*;

use super::{GROUP, QK};

/// `m` rows of `blocks` blocks each, index `row * blocks + block`.
pub(super) struct Q8Rows {
    pub blocks: usize,
    pub qs: Vec<[i8; QK]>,
    /// Scale, rounded through f16 as candle stores it, once per SIMD lane.
    pub d: Vec<[f32; GROUP]>,
    /// Q8_1's `sum(qs) * d`, rounded through f16 as candle computes it, per lane.
    pub s: Vec<[f32; GROUP]>,
}

/// Quantizes `m` rows of `x` (rows in parallel).
pub(super) fn quantize(x: &[f32], m: usize, blocks: usize) -> Q8Rows {
    let n = m * blocks;
    let mut y = Q8Rows {
        blocks,
        qs: vec![[0i8; QK]; n],
        d: vec![[0f32; GROUP]; n],
        s: vec![[0f32; GROUP]; n],
    };
    if m > 1 {
        x.par_chunks(blocks * QK)
            .zip(y.qs.par_chunks_mut(blocks))
            .zip(y.d.par_chunks_mut(blocks))
            .zip(y.s.par_chunks_mut(blocks))
            .for_each(|(((xs, qs), d), s)| quantize_row(xs, qs, d, s));
    } else {
        quantize_row(x, &mut y.qs, &mut y.d, &mut y.s);
    }
    y
}

fn quantize_row(x: &[f32], qs: &mut [[i8; QK]], d: &mut [[f32; GROUP]], s: &mut [[f32; GROUP]]) {
    for (((xs, qs), d), s) in x.chunks_exact(QK).zip(qs).zip(d).zip(s) {
        // The max of |x| does not depend on the order it is taken in.
        let mut lanes = [0f32; 8];
        for chunk in xs.chunks_exact(8) {
            for (l, &v) in lanes.iter_mut().zip(chunk) {
                *l = l.max(v.abs());
            }
        }
        let amax = lanes.iter().fold(0f32, |a, &v| a.max(v));
        let scale = amax / 127.0;
        let inverse = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        let scale16 = f16::from_f32(scale);
        for (q, &v) in qs.iter_mut().zip(xs) {
            *q = round_to_i8(v * inverse);
        }
        let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
        *d = [scale16.to_f32(); GROUP];
        *s = [(f16::from_f32(sum as f32) * scale16).to_f32(); GROUP];
    }
}

/// `v.round() as i8` (halves away from zero, saturating, NaN to 0) without
/// the libm call `round` compiles to, which cost more than the matmul's
/// quantization itself.
#[inline]
pub(super) fn round_to_i8(v: f32) -> i8 {
    // Toward zero; saturates, NaN to 0. `v - t` is exact.
    let t = v as i32 as f32;
    let r = if (v - t).abs() >= 0.5 {
        t + 1f32.copysign(v)
    } else {
        t
    };
    r as i8
}
