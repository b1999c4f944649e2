//! Launches of the row-wise kernels (`kernels/embedding.cu`, `norm.cu`,
//! `activation.cu`): embedding gather, RMSNorm (alone, after the residual add,
//! after a normed add, per head), SiLU·mul and GELU·mul, scale and soft-cap
//! of f32 rows, and the row gather before the LM head. Each checks its
//! operands' shapes and types, allocates its output and queues one kernel.
//!
//! Every kernel gives a row (or a head) to one block or warp and reduces in
//! a fixed order, so a row's result never depends on the batch. Their launch
//! configurations are `tessera-kernel-launch`'s, which the emulation tests
//! run too.

use cudarc::driver::PushKernelArg;
use tessera_kernel_launch::Launch;

use super::error::{config, driver, int, CudaBackendError};
use super::linear::CudaLinear;
use super::tensor::{Buffer, CudaTensor};
use super::Gpu;

/// `f32(table[ids])`: the residual stream's first value.
pub(crate) fn embedding(
    gpu: &Gpu,
    table: &CudaLinear,
    ids: &[u32],
) -> Result<CudaTensor, CudaBackendError> {
    let (vocab, hidden) = (table.rows(), table.cols());
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(CudaBackendError::InvalidBatch(format!(
            "token id {id} is outside the embedding table ({vocab} rows)"
        )));
    }
    let mut out = gpu.memory.alloc::<f32>(ids.len() * hidden)?;
    if !ids.is_empty() {
        let ids_dev = gpu.memory.upload(ids)?;
        let (h, v) = (int("hidden size", hidden)?, int("vocabulary", vocab)?);
        let f = gpu.kernel("embedding_gather_bf16")?;
        let mut l = gpu.stream().launch_builder(f);
        l.arg(&mut out)
            .arg(&table.weight)
            .arg(&ids_dev)
            .arg(&h)
            .arg(&v);
        // SAFETY: out [ids, hidden] f32, table [vocab, hidden] bf16, ids in range.
        unsafe { l.launch(config(Launch::rows(ids.len())?)) }
            .map_err(driver("embedding_gather_bf16"))?;
    }
    Ok(CudaTensor::new(Buffer::F32(out), ids.len(), hidden))
}

/// `bf16(x / rms(x) * w)` per row of the f32 residual `x`.
pub(crate) fn rms_norm(
    gpu: &Gpu,
    x: &CudaTensor,
    w: &CudaTensor,
    eps: f32,
) -> Result<CudaTensor, CudaBackendError> {
    w.expect_cols("rms_norm gains", x.cols())?;
    let mut out = gpu.memory.alloc::<u16>(x.len())?;
    if !x.is_empty() {
        let n = int("hidden size", x.cols())?;
        let f = gpu.kernel("rms_norm_f32_bf16")?;
        let mut l = gpu.stream().launch_builder(f);
        l.arg(&mut out)
            .arg(x.f32("rms_norm")?)
            .arg(w.f32("rms_norm gains")?)
            .arg(&n)
            .arg(&eps);
        // SAFETY: out bf16 and x f32 both [rows, n]; w n values.
        unsafe { l.launch(config(Launch::rows(x.rows())?)) }
            .map_err(driver("rms_norm_f32_bf16"))?;
    }
    Ok(CudaTensor::new(Buffer::Bf16(out), x.rows(), x.cols()))
}

/// `residual += x` (f32 += bf16), or with `post` gains `residual += x /
/// rms(x) * post` (Gemma's norm of a sublayer's output), then the bf16
/// RMSNorm of the new residual.
pub(crate) fn add_rms_norm(
    gpu: &Gpu,
    residual: &mut CudaTensor,
    x: &CudaTensor,
    (post, w): (Option<&CudaTensor>, &CudaTensor),
    eps: f32,
) -> Result<CudaTensor, CudaBackendError> {
    let kernel = match post {
        None => "add_rms_norm_f32_bf16",
        Some(_) => "add_normed_rms_norm_f32_bf16",
    };
    x.expect_cols(kernel, residual.cols())?;
    w.expect_cols("add_rms_norm gains", residual.cols())?;
    if let Some(post) = post {
        post.expect_cols("add_rms_norm post gains", residual.cols())?;
    }
    if x.rows() != residual.rows() {
        return Err(CudaBackendError::Shape(format!(
            "{kernel}: {} rows added to {}",
            x.rows(),
            residual.rows()
        )));
    }
    let (rows, cols) = (residual.rows(), residual.cols());
    let mut out = gpu.memory.alloc::<u16>(rows * cols)?;
    if rows * cols > 0 {
        let n = int("hidden size", cols)?;
        let f = gpu.kernel(kernel)?;
        let mut l = gpu.stream().launch_builder(f);
        l.arg(&mut out)
            .arg(residual.f32_mut("add_rms_norm residual")?)
            .arg(x.bf16(kernel)?);
        if let Some(post) = post {
            l.arg(post.f32("add_rms_norm post gains")?);
        }
        l.arg(w.f32("add_rms_norm gains")?).arg(&n).arg(&eps);
        // SAFETY: out bf16, residual f32, x bf16 all [rows, n]; post and w
        // n values each; the arguments are the kernel's, in its order.
        unsafe { l.launch(config(Launch::rows(rows)?)) }.map_err(driver(kernel))?;
    }
    Ok(CudaTensor::new(Buffer::Bf16(out), rows, cols))
}

/// RMSNorm of heads `offset_heads..offset_heads + num_heads` of every bf16
/// row, each `head_dim` wide, in place (Qwen3's Q/K norms).
pub(crate) fn head_rms_norm(
    gpu: &Gpu,
    x: &mut CudaTensor,
    w: &CudaTensor,
    (offset_heads, num_heads, head_dim): (usize, usize, usize),
    eps: f32,
) -> Result<(), CudaBackendError> {
    w.expect_cols("head_rms_norm gains", head_dim)?;
    if (offset_heads + num_heads) * head_dim > x.cols() {
        return Err(CudaBackendError::Shape(
            "head_rms_norm beyond the row".into(),
        ));
    }
    if x.is_empty() || num_heads == 0 {
        return Ok(());
    }
    let cfg = config(Launch::head_rms_norm(x.rows(), num_heads)?);
    let cols = int("row width", x.cols())?;
    let (offset, heads, d) = (
        int("head offset", offset_heads)?,
        int("heads", num_heads)?,
        int("head size", head_dim)?,
    );
    let f = gpu.kernel("head_rms_norm_bf16")?;
    let mut l = gpu.stream().launch_builder(f);
    l.arg(x.bf16_mut("head_rms_norm")?)
        .arg(w.f32("head_rms_norm gains")?)
        .arg(&cols)
        .arg(&offset)
        .arg(&heads)
        .arg(&d)
        .arg(&eps);
    // SAFETY: the heads lie inside each row (checked); w has head_dim values.
    unsafe { l.launch(cfg) }.map_err(driver("head_rms_norm_bf16"))?;
    Ok(())
}

/// `act(gate) * up` of a bf16 `[rows, 2 * I]` gate|up projection, `kernel`
/// being `silu_mul_bf16` or `gelu_tanh_mul_bf16`.
pub(crate) fn gated(
    gpu: &Gpu,
    gate_up: &CudaTensor,
    kernel: &'static str,
) -> Result<CudaTensor, CudaBackendError> {
    if !gate_up.cols().is_multiple_of(2) {
        return Err(CudaBackendError::Shape(format!(
            "{kernel} of an odd width {}",
            gate_up.cols()
        )));
    }
    let (rows, inter) = (gate_up.rows(), gate_up.cols() / 2);
    let mut out = gpu.memory.alloc::<u16>(rows * inter)?;
    if rows * inter > 0 {
        let cfg = config(Launch::silu_mul(rows, inter)?);
        let i = int("intermediate size", inter)?;
        let f = gpu.kernel(kernel)?;
        let mut l = gpu.stream().launch_builder(f);
        l.arg(&mut out).arg(gate_up.bf16(kernel)?).arg(&i);
        // SAFETY: out [rows, I], gate_up [rows, 2I], both bf16.
        unsafe { l.launch(cfg) }.map_err(driver(kernel))?;
    }
    Ok(CudaTensor::new(Buffer::Bf16(out), rows, inter))
}

/// `x = op(x, value)` over every element of an f32 tensor in place, `kernel`
/// being `scale_f32` (`x * value`) or `softcap_f32` (`tanh(x / value) * value`).
pub(crate) fn elementwise_f32(
    gpu: &Gpu,
    x: &mut CudaTensor,
    kernel: &'static str,
    value: f32,
) -> Result<(), CudaBackendError> {
    if x.is_empty() {
        return Ok(());
    }
    let cfg = config(Launch::silu_mul(x.rows(), x.cols())?);
    let cols = int("row width", x.cols())?;
    let f = gpu.kernel(kernel)?;
    let mut l = gpu.stream().launch_builder(f);
    l.arg(x.f32_mut(kernel)?).arg(&cols).arg(&value);
    // SAFETY: the grid covers x's rows x cols and the kernel checks the width.
    unsafe { l.launch(cfg) }.map_err(driver(kernel))?;
    Ok(())
}

/// Rows `rows` of a bf16 tensor.
pub(crate) fn gather_rows(
    gpu: &Gpu,
    x: &CudaTensor,
    rows: &[usize],
) -> Result<CudaTensor, CudaBackendError> {
    let mut ids = Vec::with_capacity(rows.len());
    for &r in rows {
        if r >= x.rows() {
            return Err(CudaBackendError::Shape(format!("row {r} of {}", x.rows())));
        }
        ids.push(r as u32); // rows < x.rows(), itself from u32 token counts
    }
    let mut out = gpu.memory.alloc::<u16>(rows.len() * x.cols())?;
    if !rows.is_empty() && x.cols() > 0 {
        let ids_dev = gpu.memory.upload(&ids)?;
        let cols = int("row width", x.cols())?;
        let f = gpu.kernel("gather_rows_bf16")?;
        let mut l = gpu.stream().launch_builder(f);
        l.arg(&mut out)
            .arg(x.bf16("gather_rows")?)
            .arg(&ids_dev)
            .arg(&cols);
        // SAFETY: every id is a row of x (checked); out [ids, cols].
        unsafe { l.launch(config(Launch::rows(rows.len())?)) }
            .map_err(driver("gather_rows_bf16"))?;
    }
    Ok(CudaTensor::new(Buffer::Bf16(out), rows.len(), x.cols()))
}
