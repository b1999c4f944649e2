//! Activations for the K-quant kernels: 8 bits per value, an f32 scale per 256
//! values (ggml's Q8_K), quantized exactly as candle's `BlockQ8K::from_float`
//! does it, so both see the same integers. The SIMD parts are the Q8_0
//! quantizer's (`activations.rs`), which return the portable code's values.

use rayon::prelude::*;

use super::activations::{amax, amax_portable, round_block, round_block_portable};
use super::QK;

/// Values per super-block.
pub(super) const QK_K: usize = 256;

/// One row's 256 values.
#[derive(Clone)]
pub(super) struct Q8KBlock {
    /// The values in chunks of 32, the unit the kernels load.
    pub qs: [[i8; QK]; QK_K / QK],
    /// `sum(qs)` per 16 values (Q6_K's sub-blocks).
    pub bsums: [i16; QK_K / 16],
    /// `sum(qs)` per 32 values (Q4_K's sub-blocks).
    pub sums32: [i16; QK_K / 32],
    /// The scale: value `i` is `qs[i] * d`.
    pub d: f32,
}

impl Q8KBlock {
    const ZERO: Self = Self {
        qs: [[0; QK]; QK_K / QK],
        bsums: [0; QK_K / 16],
        sums32: [0; QK_K / 32],
        d: 0.0,
    };

    /// Value `t` (0..256).
    pub fn q(&self, t: usize) -> i8 {
        self.qs[t / QK][t % QK]
    }
}

/// `m` rows of `super_blocks` blocks each, index `row * super_blocks + block`.
pub(super) struct Q8KRows {
    pub super_blocks: usize,
    pub blocks: Vec<Q8KBlock>,
}

/// Quantizes `m` rows of `x` (rows in parallel).
pub(super) fn quantize(x: &[f32], m: usize, super_blocks: usize) -> Q8KRows {
    assert_eq!(x.len(), m * super_blocks * QK_K, "activation shape");
    let mut blocks = vec![Q8KBlock::ZERO; m * super_blocks];
    let row = |(xs, row): (&[f32], &mut [Q8KBlock])| {
        for (xs, block) in xs.chunks_exact(QK_K).zip(row) {
            quantize_block(xs, block, false);
        }
    };
    if m > 1 {
        x.par_chunks(super_blocks * QK_K)
            .zip(blocks.par_chunks_mut(super_blocks))
            .for_each(row);
    } else {
        row((x, &mut blocks));
    }
    Q8KRows {
        super_blocks,
        blocks,
    }
}

/// candle's `BlockQ8K::from_float` for one block: the scale makes the value
/// of largest magnitude (the first such) exactly -127, and the rest round
/// half away from zero. `portable` forces the code without SIMD (for tests).
pub(super) fn quantize_block(xs: &[f32], block: &mut Q8KBlock, portable: bool) {
    debug_assert_eq!(xs.len(), QK_K);
    let chunks = || {
        xs.chunks_exact(QK)
            .map(|c| <&[f32; QK]>::try_from(c).expect("chunks_exact gives whole chunks"))
    };
    // The largest |x| is the same in any order, NaN ignored as candle's `<` does.
    let amax = chunks().fold(0f32, |m, c| {
        m.max(if portable { amax_portable(c) } else { amax(c) })
    });
    let Some(&max) = xs.iter().find(|x| x.abs() == amax).filter(|_| amax != 0.0) else {
        *block = Q8KBlock::ZERO;
        return;
    };
    let iscale = -127.0 / max;
    for (c, qs) in chunks().zip(&mut block.qs) {
        if portable {
            round_block_portable(c, iscale, qs);
        } else {
            round_block(c, iscale, qs);
        }
    }
    for (j, s) in block.bsums.iter_mut().enumerate() {
        // At most 16 * 128 in magnitude: fits i16.
        let half = &block.qs[j / 2][16 * (j % 2)..][..16];
        *s = half.iter().map(|&q| i16::from(q)).sum();
    }
    for (j, s) in block.sums32.iter_mut().enumerate() {
        *s = block.bsums[2 * j] + block.bsums[2 * j + 1];
    }
    block.d = 1.0 / iscale;
}
