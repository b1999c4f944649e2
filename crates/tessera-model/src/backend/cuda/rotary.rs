//! The rotary table on the device and the fused rotary + KV-cache write
//! (`kernels/rotary.cu`).

use cudarc::driver::{CudaSlice, PushKernelArg};
use tessera_kernel_launch::Launch;

use crate::backend::{AttentionShape, RopeTable};
use crate::config::RopeStyle;

use super::error::{config, driver, int, CudaBackendError};
use super::kv_cache::CudaKvCache;
use super::memory::DeviceMemory;
use super::meta::{Array, DeviceBatch};
use super::tensor::CudaTensor;
use super::Gpu;

/// Cosines and sines per position and rotated pair, f32 (as on the CPU).
pub struct CudaRope {
    cos: CudaSlice<f32>,
    sin: CudaSlice<f32>,
    max_positions: usize,
    head_dim: usize,
    interleaved: bool,
}

impl CudaRope {
    pub(crate) fn upload(memory: &DeviceMemory, rope: RopeTable) -> Result<Self, CudaBackendError> {
        let pairs = rope.max_positions * (rope.head_dim / 2);
        if rope.cos.len() != pairs || rope.sin.len() != pairs || !rope.head_dim.is_multiple_of(2) {
            return Err(CudaBackendError::Shape(format!(
                "rotary table of {} / {} values for {} positions of head size {}",
                rope.cos.len(),
                rope.sin.len(),
                rope.max_positions,
                rope.head_dim
            )));
        }
        Ok(Self {
            cos: memory.upload(&rope.cos)?,
            sin: memory.upload(&rope.sin)?,
            max_positions: rope.max_positions,
            head_dim: rope.head_dim,
            interleaved: rope.style == RopeStyle::Interleaved,
        })
    }

    /// Positions the table covers.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }
}

/// Rotates the Q and K heads of the bf16 `[tokens, (H + 2 KV) * D]` rows in
/// place and writes each token's K and V into its slot of `layer`.
pub(crate) fn rotary_cache_write(
    gpu: &Gpu,
    qkv: &mut CudaTensor,
    rope: &CudaRope,
    cache: &mut CudaKvCache,
    layer: usize,
    shape: &AttentionShape,
    meta: &DeviceBatch,
) -> Result<(), CudaBackendError> {
    let d = shape.head_dim;
    qkv.expect_cols("rotary", (shape.num_heads + 2 * shape.num_kv_heads) * d)?;
    if rope.head_dim != d {
        return Err(CudaBackendError::Shape(format!(
            "rotary table of head size {}, expected {d}",
            rope.head_dim
        )));
    }
    let pool = cache.shape();
    if pool.num_kv_heads != shape.num_kv_heads || pool.head_dim != d {
        return Err(CudaBackendError::Shape(format!(
            "KV cache of {} heads of {}, attention of {} of {d}",
            pool.num_kv_heads, pool.head_dim, shape.num_kv_heads
        )));
    }
    let packed = meta.packed();
    if packed.num_tokens != qkv.rows() {
        return Err(CudaBackendError::Shape(format!(
            "rotary: {} rows for a batch of {} tokens",
            qkv.rows(),
            packed.num_tokens
        )));
    }
    if packed.num_tokens == 0 {
        return Ok(());
    }
    if packed.max_pos >= rope.max_positions {
        return Err(CudaBackendError::InvalidBatch(format!(
            "position {} beyond the rotary table of {}",
            packed.max_pos, rope.max_positions
        )));
    }
    let num_slots = cache.num_slots() as u64;
    let (heads, kv_heads, hd, max_pos, interleaved) = (
        int("heads", shape.num_heads)?,
        int("KV heads", shape.num_kv_heads)?,
        int("head size", d)?,
        int("rotary positions", rope.max_positions)?,
        i32::from(rope.interleaved),
    );
    let (positions, slots) = (meta.view(Array::Positions), meta.view(Array::Slots));
    let (k, v) = cache.layer_mut(layer)?;
    let f = gpu.kernel("rotary_cache_write_bf16")?;
    let mut l = gpu.stream().launch_builder(f);
    l.arg(qkv.bf16_mut("rotary")?)
        .arg(k)
        .arg(v)
        .arg(&rope.cos)
        .arg(&rope.sin)
        .arg(&positions)
        .arg(&slots)
        .arg(&heads)
        .arg(&kv_heads)
        .arg(&hd)
        .arg(&max_pos)
        .arg(&interleaved)
        .arg(&num_slots);
    let cfg = config(Launch::rotary(packed.num_tokens)?);
    // SAFETY: positions are inside the table, slots inside the pool (checked
    // when the batch was packed), qkv rows are (H + 2 KV) * D wide.
    unsafe { l.launch(cfg) }.map_err(driver("rotary_cache_write_bf16"))?;
    Ok(())
}
