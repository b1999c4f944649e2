//! Row-wise elementwise kernels of the CPU backend. Each row is reduced in a fixed
//! order by one thread, which keeps results independent of the batch.

/// `out = x / sqrt(mean(x^2) + eps) * w`, in candle's operation order: activations
/// are then quantized to 8 bits, where even a last-bit difference can flip a
/// rounding, so matching the reference's order keeps comparisons exact.
pub fn rms_norm_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let sum_sq: f32 = x.iter().map(|v| v * v).sum();
    let rms = (sum_sq / x.len() as f32 + eps).sqrt();
    for ((o, v), g) in out.iter_mut().zip(x).zip(w) {
        *o = v / rms * g;
    }
}

/// In-place RMSNorm of one row.
pub fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let sum_sq: f32 = x.iter().map(|v| v * v).sum();
    let rms = (sum_sq / x.len() as f32 + eps).sqrt();
    for (v, g) in x.iter_mut().zip(w) {
        *v = *v / rms * g;
    }
}

/// `silu(gate) * up`, the exponentials eight at a time (`vexp`).
pub fn silu_mul_row(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for (o, g) in out.iter_mut().zip(gate) {
        *o = -g;
    }
    super::vexp::exp_in_place(out);
    for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + *o) * u;
    }
}

/// Rotates one head in place by the angles of one position.
pub fn rotate_head(head: &mut [f32], cos: &[f32], sin: &[f32], interleaved: bool) {
    let half = head.len() / 2;
    if interleaved {
        for i in 0..half {
            let (a, b) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = a * cos[i] - b * sin[i];
            head[2 * i + 1] = a * sin[i] + b * cos[i];
        }
    } else {
        for i in 0..half {
            let (a, b) = (head[i], head[i + half]);
            head[i] = a * cos[i] - b * sin[i];
            head[i + half] = a * sin[i] + b * cos[i];
        }
    }
}

/// `gelu_tanh(gate) * up` with `gelu_tanh(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))`,
/// PyTorch's `gelu(approximate="tanh")` in its order of operations.
pub fn gelu_tanh_mul_row(gate: &[f32], up: &[f32], out: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        let inner = SQRT_2_OVER_PI * (g + 0.044_715 * g * g * g);
        *o = 0.5 * g * (1.0 + inner.tanh()) * u;
    }
}

/// `cap * tanh(x / cap)` in place.
pub fn softcap_in_place(x: &mut [f32], cap: f32) {
    for v in x {
        *v = (*v / cap).tanh() * cap;
    }
}
