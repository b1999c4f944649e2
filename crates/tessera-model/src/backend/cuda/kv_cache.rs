//! The paged KV cache on the GPU: per layer a K pool and a V pool laid out
//! `[slot][kv_head][head_dim]` (the CPU backend's layout), `slot = block *
//! block_size + offset`, in bf16.
//!
//! `--kv-cache-dtype`: the CUDA backend keeps K and V in bf16, the type of the
//! projections they are copied from, so storing them loses nothing. The
//! 16-bit option (`f16`, the default) therefore means bf16 here, at the same
//! two bytes a value; `f32` is refused ([`CudaKvCache::new`]), since it would
//! only store bf16 values in twice the memory.

use cudarc::driver::CudaSlice;

use crate::backend::{KvCacheDtype, KvCacheShape};

use super::error::CudaBackendError;
use super::memory::DeviceMemory;

/// K and V pools of every layer.
pub struct CudaKvCache {
    shape: KvCacheShape,
    k: Vec<CudaSlice<u16>>,
    v: Vec<CudaSlice<u16>>,
}

impl CudaKvCache {
    /// Allocates zeroed pools, or refuses an f32 cache.
    pub(crate) fn new(
        memory: &DeviceMemory,
        shape: KvCacheShape,
    ) -> Result<Self, CudaBackendError> {
        if shape.dtype == KvCacheDtype::F32 {
            return Err(CudaBackendError::Unsupported(
                "the CUDA backend stores K and V in bf16 (--kv-cache-dtype f16, the default); \
                 --kv-cache-dtype f32 is for the CPU backend"
                    .into(),
            ));
        }
        let per_layer = shape
            .num_blocks
            .checked_mul(shape.block_size)
            .and_then(|n| n.checked_mul(shape.num_kv_heads))
            .and_then(|n| n.checked_mul(shape.head_dim))
            .ok_or_else(|| CudaBackendError::Shape(format!("KV cache {shape:?} is too large")))?;
        let mut k = Vec::with_capacity(shape.num_layers);
        let mut v = Vec::with_capacity(shape.num_layers);
        for _ in 0..shape.num_layers {
            k.push(memory.zeros::<u16>(per_layer)?);
            v.push(memory.zeros::<u16>(per_layer)?);
        }
        Ok(Self { shape, k, v })
    }

    /// The pool geometry.
    pub fn shape(&self) -> KvCacheShape {
        self.shape
    }

    /// Slots in each pool.
    pub fn num_slots(&self) -> usize {
        self.shape.num_blocks * self.shape.block_size
    }

    /// Bytes of K and V over all layers.
    pub fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|b| b.num_bytes()).sum()
    }

    /// Layer `layer`'s K and V pools, or an error naming the layer.
    pub(crate) fn layer(
        &self,
        layer: usize,
    ) -> Result<(&CudaSlice<u16>, &CudaSlice<u16>), CudaBackendError> {
        match (self.k.get(layer), self.v.get(layer)) {
            (Some(k), Some(v)) => Ok((k, v)),
            _ => Err(no_layer(layer, self.k.len())),
        }
    }

    /// Layer `layer`'s K and V pools, to write.
    pub(crate) fn layer_mut(
        &mut self,
        layer: usize,
    ) -> Result<(&mut CudaSlice<u16>, &mut CudaSlice<u16>), CudaBackendError> {
        let layers = self.k.len();
        match (self.k.get_mut(layer), self.v.get_mut(layer)) {
            (Some(k), Some(v)) => Ok((k, v)),
            _ => Err(no_layer(layer, layers)),
        }
    }
}

fn no_layer(layer: usize, layers: usize) -> CudaBackendError {
    CudaBackendError::Shape(format!("KV cache layer {layer} of {layers}"))
}
