//! Paged attention on the GPU (`kernels/attention.cu`): every new token
//! attends causally to its sequence's cached keys, prefill and decode alike.
//!
//! Split-K: a token's keys are cut into partitions of [`PARTITION`] keys, one
//! block per (token, KV head, partition), merged in partition order by the
//! combine kernel. The partition size is a constant, so how a token's keys
//! are cut depends only on its own position: its result is the same in any
//! batch. Only the partials' buffer, `[tokens, heads, splits, D]` with
//! `splits` set by the batch's longest context, depends on the batch.

use cudarc::driver::PushKernelArg;
pub use tessera_kernel_launch::PARTITION;
use tessera_kernel_launch::{attention_kernel, attention_splits, Launch, MAX_GROUP};

use crate::backend::AttentionShape;

use super::error::{config, driver, int, CudaBackendError};
use super::kv_cache::CudaKvCache;
use super::meta::{Array, DeviceBatch};
use super::tensor::{Buffer, CudaTensor};
use super::Gpu;

/// Checks that the kernels handle `shape`: a head size with a kernel, whole
/// GQA groups of at most [`MAX_GROUP`] heads.
pub(crate) fn check_shape(shape: &AttentionShape) -> Result<(), CudaBackendError> {
    if attention_kernel(shape.head_dim).is_none() {
        return Err(CudaBackendError::Unsupported(format!(
            "the CUDA attention kernels take head sizes 64, 80, 96 and 128, not {}",
            shape.head_dim
        )));
    }
    if shape.num_kv_heads == 0
        || !shape.num_heads.is_multiple_of(shape.num_kv_heads)
        || shape.num_heads / shape.num_kv_heads > MAX_GROUP
    {
        return Err(CudaBackendError::Unsupported(format!(
            "the CUDA attention kernels take at most {MAX_GROUP} query heads per KV head, \
             not {} over {}",
            shape.num_heads, shape.num_kv_heads
        )));
    }
    Ok(())
}

/// Attention of every token of `meta` over `layer`'s cache; `[tokens, H * D]` bf16.
pub(crate) fn paged_attention(
    gpu: &Gpu,
    qkv: &CudaTensor,
    cache: &CudaKvCache,
    layer: usize,
    shape: &AttentionShape,
    meta: &DeviceBatch,
) -> Result<CudaTensor, CudaBackendError> {
    check_shape(shape)?;
    let (h, kv, d) = (shape.num_heads, shape.num_kv_heads, shape.head_dim);
    qkv.expect_cols("paged_attention", (h + 2 * kv) * d)?;
    let pool = cache.shape();
    if pool.num_kv_heads != kv || pool.head_dim != d {
        return Err(CudaBackendError::Shape(format!(
            "KV cache of {} heads of {}, attention of {kv} of {d}",
            pool.num_kv_heads, pool.head_dim
        )));
    }
    let packed = meta.packed();
    let t = packed.num_tokens;
    if qkv.rows() != t {
        return Err(CudaBackendError::Shape(format!(
            "paged_attention: {} rows for a batch of {t} tokens",
            qkv.rows()
        )));
    }
    let mut out = gpu.memory.alloc::<u16>(t * h * d)?;
    if t == 0 {
        return Ok(CudaTensor::new(Buffer::Bf16(out), 0, h * d));
    }
    let splits = attention_splits(packed.max_pos, shape.sliding_window);
    let mut part_out = gpu.memory.alloc::<f32>(t * h * splits * d)?;
    let mut part_ml = gpu.memory.alloc::<f32>(t * h * splits * 2)?;
    let window = int("sliding window", shape.sliding_window.unwrap_or(0))?;
    // 0: no soft-cap (a cap is positive: the config checks it).
    let softcap = shape.softcap.unwrap_or(0.0);
    let (heads, kv_heads, block_size, partition, max_splits) = (
        int("heads", h)?,
        int("KV heads", kv)?,
        int("block size", pool.block_size)?,
        int("partition", PARTITION)?,
        int("splits", splits)?,
    );
    let (token_seq, token_pos) = (meta.view(Array::TokenSeq), meta.view(Array::Positions));
    let (tables, table_start) = (meta.view(Array::Tables), meta.view(Array::TableStart));
    let (k, v) = cache.layer(layer)?;
    let name = attention_kernel(d).unwrap_or("paged_attention_d128");
    let f = gpu.kernel(name)?;
    let mut l = gpu.stream().launch_builder(f);
    l.arg(&mut part_out)
        .arg(&mut part_ml)
        .arg(qkv.bf16("paged_attention")?)
        .arg(k)
        .arg(v)
        .arg(&token_seq)
        .arg(&token_pos)
        .arg(&tables)
        .arg(&table_start)
        .arg(&heads)
        .arg(&kv_heads)
        .arg(&block_size)
        .arg(&window)
        .arg(&shape.scale)
        .arg(&softcap)
        .arg(&partition)
        .arg(&max_splits);
    let cfg = config(Launch::attention(t, kv, splits)?);
    // SAFETY: every token's keys lie in its sequence's table and every table
    // entry in the pool (checked when the batch was packed); the partials
    // hold [tokens, H, splits] entries; D and the group fit the kernel.
    unsafe { l.launch(cfg) }.map_err(driver(name))?;

    let head_dim = int("head size", d)?;
    let f = gpu.kernel("paged_attention_combine")?;
    let mut l = gpu.stream().launch_builder(f);
    l.arg(&mut out)
        .arg(&part_out)
        .arg(&part_ml)
        .arg(&token_pos)
        .arg(&heads)
        .arg(&head_dim)
        .arg(&window)
        .arg(&partition)
        .arg(&max_splits);
    let cfg = config(Launch::attention_combine(t, h)?);
    // SAFETY: reads the partitions each token's attention wrote; out [t, H * D].
    unsafe { l.launch(cfg) }.map_err(driver("paged_attention_combine"))?;
    Ok(CudaTensor::new(Buffer::Bf16(out), t, h * d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_without_a_kernel_are_refused() {
        let shape = |num_heads, num_kv_heads, head_dim| AttentionShape {
            num_heads,
            num_kv_heads,
            head_dim,
            scale: 1.0,
            sliding_window: None,
            softcap: None,
        };
        assert!(check_shape(&shape(32, 8, 128)).is_ok());
        assert!(check_shape(&shape(14, 2, 64)).is_ok());
        let msg = check_shape(&shape(8, 8, 72)).unwrap_err().to_string();
        assert!(msg.contains("head sizes 64, 80, 96 and 128"), "{msg}");
        assert!(check_shape(&shape(32, 1, 64)).is_err(), "group of 32");
        assert!(check_shape(&shape(6, 4, 64)).is_err(), "uneven groups");
    }
}
