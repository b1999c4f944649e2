//! The CUDA backend (`--features cuda`): the model forward's operations on an
//! NVIDIA GPU (sm_80 or newer), over the device layer of [`crate::cuda`].
//!
//! - GEMMs: cuBLASLt, bf16 operands, f32 accumulation, one algorithm per
//!   weight shape so rows do not depend on the batch size ([`gemm`]).
//! - Everything else: the NVRTC-compiled kernels of `kernels/*.cu`
//!   ([`ops`], [`rotary`], [`attention`]).
//! - Weights: dequantized on the host to bf16 at upload ([`linear`]).
//! - Activations: bf16 between GEMMs, the residual stream and norm gains in
//!   f32, logits in f32 ([`tensor`] has the table).
//! - KV cache: bf16, paged as on the CPU ([`kv_cache`]); its size comes from
//!   `--gpu-memory-utilization` ([`budget`]).
//! - Memory: the device's stream-ordered pool, kept warm, on one stream
//!   ([`memory`]); a batch's metadata is uploaded once per forward ([`meta`]).
//!
//! **Status: compiled, never run.** No GPU was available where this was
//! written; `crates/tessera-model/tests/cuda_backend/` holds the checks a
//! machine with one runs (every operation against the CPU backend, logits of
//! random Llama and Qwen2 models, batch invariance, greedy outputs), and
//! `scripts/gpu-check` prepares them. CUDA graphs for decode steps are not
//! implemented yet; the memory design leaves room for them.

mod attention;
pub mod budget;
mod error;
mod gemm;
mod kv_cache;
mod linear;
mod memory;
mod meta;
mod ops;
mod rotary;
mod tensor;

use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaFunction, CudaStream};

pub use attention::PARTITION;
pub use budget::{activation_bytes, kv_cache_budget, BudgetError, ForwardLimits, GpuMemory};
pub use error::CudaBackendError;
pub use kv_cache::CudaKvCache;
pub use linear::CudaLinear;
pub use rotary::CudaRope;
pub use tensor::{bf16_bits_to_f32, f32_to_bf16_bits, CudaTensor, DType};

use crate::backend::{AttentionShape, Backend, KvCacheShape, RopeTable};
use crate::batch::FlatBatch;
use crate::config::ModelConfig;
use crate::cuda::ptx_cache::PtxCache;
use crate::cuda::{Arch, CudaDevice, LoadedKernels};
use crate::error::Result;
use crate::weights::HostMatrix;

use memory::DeviceMemory;
use meta::DeviceBatch;
use tensor::Buffer;

/// What every operation launches with: the stream and its memory, the
/// kernels, cuBLASLt.
pub(crate) struct Gpu {
    memory: DeviceMemory,
    kernels: LoadedKernels,
    gemm: gemm::Gemm,
}

impl Gpu {
    /// The loaded kernel `name`.
    fn kernel(&self, name: &'static str) -> Result<&CudaFunction, CudaBackendError> {
        self.kernels
            .function(name)
            .ok_or_else(|| CudaBackendError::Unsupported(format!("kernel {name} is not loaded")))
    }

    /// The stream every operation is queued on.
    fn stream(&self) -> &Arc<CudaStream> {
        self.memory.stream()
    }
}

/// The model's operations on one CUDA device. Operations are queued on one
/// stream and return at once; [`Backend::to_host`] waits for them.
pub struct CudaBackend {
    /// Shared by every model on the device (see [`CudaBackend::share`]).
    gpu: Arc<Gpu>,
    /// The last batch whose metadata was uploaded (see [`meta`]).
    batch: Mutex<Option<DeviceBatch>>,
    device: CudaDevice,
}

impl CudaBackend {
    /// Sets up `device`: a stream, the memory pool, every kernel of
    /// `kernels/` (compiled by NVRTC for its architecture, or read from
    /// `ptx_cache`) and cuBLASLt.
    pub fn new(
        device: CudaDevice,
        ptx_cache: Option<&PtxCache>,
    ) -> std::result::Result<Self, CudaBackendError> {
        let memory = DeviceMemory::new(device.context())?;
        let kernels = LoadedKernels::load(&device, ptx_cache)?;
        let gemm = gemm::Gemm::new(&memory, device.arch().major >= Arch::SM90.major)?;
        Ok(Self {
            gpu: Arc::new(Gpu {
                memory,
                kernels,
                gemm,
            }),
            batch: Mutex::new(None),
            device,
        })
    }

    /// Another backend on the same device, stream, memory pool, kernels and
    /// cuBLASLt handle, for another model: the device is set up once per
    /// process. Work from every model queues on the one stream, so buffers
    /// and the GEMM workspace are reused in stream order.
    pub fn share(&self) -> Self {
        Self {
            gpu: Arc::clone(&self.gpu),
            batch: Mutex::new(None),
            device: self.device.clone(),
        }
    }

    /// An error unless the kernels run `config`'s attention (head size 64,
    /// 80, 96 or 128; at most 16 query heads per KV head): checked at load,
    /// before the first forward would find out.
    pub fn check_model(config: &ModelConfig) -> std::result::Result<(), CudaBackendError> {
        attention::check_shape(&AttentionShape {
            num_heads: config.num_heads,
            num_kv_heads: config.num_kv_heads,
            head_dim: config.head_dim,
            scale: 1.0,
            sliding_window: config.sliding_window,
            softcap: config.attn_logit_softcap,
        })
    }

    /// The device.
    pub fn device(&self) -> &CudaDevice {
        &self.device
    }

    /// Free and total device memory now.
    pub fn memory_info(&self) -> std::result::Result<GpuMemory, CudaBackendError> {
        self.gpu.memory.info()
    }

    /// Waits for every queued operation; reports a kernel's fault.
    pub fn synchronize(&self) -> std::result::Result<(), CudaBackendError> {
        self.gpu.memory.synchronize()
    }

    /// Fills every tensor allocated from now on with NaN before its kernel
    /// writes it (0xFF bytes), so a test sees any element left unwritten.
    pub fn set_poison(&self, on: bool) {
        self.gpu.memory.set_poison(on);
    }

    /// A `rows x cols` tensor holding `values` (rounded to bf16 for
    /// [`DType::Bf16`]): inputs for tests and tools.
    pub fn tensor_from_host(
        &self,
        values: &[f32],
        rows: usize,
        cols: usize,
        dtype: DType,
    ) -> Result<CudaTensor> {
        if values.len() != rows * cols {
            return Err(CudaBackendError::Shape(format!(
                "{} values for a {rows}x{cols} tensor",
                values.len()
            ))
            .into());
        }
        let buf = match dtype {
            DType::Bf16 => Buffer::Bf16(self.gpu.memory.upload(&f32_to_bf16_bits(values))?),
            DType::F32 => Buffer::F32(self.gpu.memory.upload(values)?),
        };
        Ok(CudaTensor::new(buf, rows, cols))
    }

    /// `x @ w^T + bias` into a tensor of type `out`.
    fn project(&self, x: &CudaTensor, w: &CudaLinear, out: DType) -> Result<CudaTensor> {
        x.expect_cols(w.name(), w.cols())?;
        let (m, n, k) = (x.rows(), w.rows(), w.cols());
        let mut buf = match out {
            DType::Bf16 => Buffer::Bf16(self.gpu.memory.alloc(m * n)?),
            DType::F32 => Buffer::F32(self.gpu.memory.alloc(m * n)?),
        };
        let bias = w.bias.as_ref().map(|b| match out {
            DType::Bf16 => &b.bf16,
            DType::F32 => &b.f32,
        });
        self.gpu
            .gemm
            .matmul((m, n, k), x.bf16("linear")?, &w.weight, bias, &mut buf)?;
        Ok(CudaTensor::new(buf, m, n))
    }

    /// Runs `op` with `batch`'s metadata on the device (uploaded if it is
    /// not the batch of the previous call).
    fn with_batch<T>(
        &self,
        batch: &FlatBatch,
        pool: &KvCacheShape,
        op: impl FnOnce(&DeviceBatch) -> std::result::Result<T, CudaBackendError>,
    ) -> Result<T> {
        let mut slot = self.batch.lock().unwrap_or_else(|p| p.into_inner());
        let meta = meta::device_batch(
            &mut slot,
            &self.gpu.memory,
            batch,
            pool.num_blocks,
            pool.block_size,
        )?;
        Ok(op(meta)?)
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        // Let queued work finish before its buffers and modules go.
        let _ = self.gpu.memory.synchronize();
    }
}

impl Backend for CudaBackend {
    type Tensor = CudaTensor;
    type Linear = CudaLinear;
    type KvCache = CudaKvCache;
    type Rope = CudaRope;

    fn name(&self) -> String {
        format!("cuda:{}", self.device.ordinal())
    }

    fn upload_linear(&self, parts: Vec<HostMatrix>, bias: Option<Vec<f32>>) -> Result<CudaLinear> {
        Ok(CudaLinear::upload(&self.gpu.memory, parts, bias)?)
    }

    fn upload_vector(&self, v: Vec<f32>) -> Result<CudaTensor> {
        let n = v.len();
        self.tensor_from_host(&v, 1, n, DType::F32)
    }

    fn upload_rope(&self, rope: RopeTable) -> Result<CudaRope> {
        Ok(CudaRope::upload(&self.gpu.memory, rope)?)
    }

    fn alloc_kv_cache(&self, shape: KvCacheShape) -> Result<CudaKvCache> {
        Ok(CudaKvCache::new(&self.gpu.memory, shape)?)
    }

    fn embedding(&self, table: &CudaLinear, ids: &[u32]) -> Result<CudaTensor> {
        Ok(ops::embedding(&self.gpu, table, ids)?)
    }

    fn rms_norm(&self, x: &CudaTensor, w: &CudaTensor, eps: f32) -> Result<CudaTensor> {
        Ok(ops::rms_norm(&self.gpu, x, w, eps)?)
    }

    fn add_rms_norm(
        &self,
        residual: &mut CudaTensor,
        x: &CudaTensor,
        w: &CudaTensor,
        eps: f32,
    ) -> Result<CudaTensor> {
        Ok(ops::add_rms_norm(&self.gpu, residual, x, (None, w), eps)?)
    }

    fn add_normed_rms_norm(
        &self,
        residual: &mut CudaTensor,
        x: &CudaTensor,
        post: &CudaTensor,
        w: &CudaTensor,
        eps: f32,
    ) -> Result<CudaTensor> {
        Ok(ops::add_rms_norm(
            &self.gpu,
            residual,
            x,
            (Some(post), w),
            eps,
        )?)
    }

    fn scale(&self, x: &mut CudaTensor, s: f32) -> Result<()> {
        Ok(ops::elementwise_f32(&self.gpu, x, "scale_f32", s)?)
    }

    fn softcap(&self, x: &mut CudaTensor, cap: f32) -> Result<()> {
        Ok(ops::elementwise_f32(&self.gpu, x, "softcap_f32", cap)?)
    }

    fn head_rms_norm(
        &self,
        x: &mut CudaTensor,
        w: &CudaTensor,
        offset_heads: usize,
        num_heads: usize,
        head_dim: usize,
        eps: f32,
    ) -> Result<()> {
        Ok(ops::head_rms_norm(
            &self.gpu,
            x,
            w,
            (offset_heads, num_heads, head_dim),
            eps,
        )?)
    }

    fn linear(&self, x: &CudaTensor, w: &CudaLinear) -> Result<CudaTensor> {
        self.project(x, w, DType::Bf16)
    }

    /// Logits in f32: cuBLASLt writes the LM head's output in f32 from the
    /// same bf16 operands.
    fn logits(&self, x: &CudaTensor, lm_head: &CudaLinear) -> Result<CudaTensor> {
        self.project(x, lm_head, DType::F32)
    }

    fn rotary_and_cache_write(
        &self,
        qkv: &mut CudaTensor,
        rope: &CudaRope,
        cache: &mut CudaKvCache,
        layer: usize,
        shape: &AttentionShape,
        batch: &FlatBatch,
    ) -> Result<()> {
        attention::check_shape(shape)?;
        let pool = cache.shape();
        self.with_batch(batch, &pool, |meta| {
            rotary::rotary_cache_write(&self.gpu, qkv, rope, cache, layer, shape, meta)
        })
    }

    fn paged_attention(
        &self,
        qkv: &CudaTensor,
        cache: &CudaKvCache,
        layer: usize,
        shape: &AttentionShape,
        batch: &FlatBatch,
    ) -> Result<CudaTensor> {
        self.with_batch(batch, &cache.shape(), |meta| {
            attention::paged_attention(&self.gpu, qkv, cache, layer, shape, meta)
        })
    }

    fn silu_mul(&self, gate_up: &CudaTensor) -> Result<CudaTensor> {
        Ok(ops::gated(&self.gpu, gate_up, "silu_mul_bf16")?)
    }

    fn gelu_tanh_mul(&self, gate_up: &CudaTensor) -> Result<CudaTensor> {
        Ok(ops::gated(&self.gpu, gate_up, "gelu_tanh_mul_bf16")?)
    }

    fn gather_rows(&self, x: &CudaTensor, rows: &[usize]) -> Result<CudaTensor> {
        Ok(ops::gather_rows(&self.gpu, x, rows)?)
    }

    fn to_host(&self, x: &CudaTensor) -> Result<Vec<f32>> {
        let memory = &self.gpu.memory;
        Ok(match x.buffer() {
            Buffer::F32(b) => memory.download(b, x.len())?,
            Buffer::Bf16(b) => bf16_bits_to_f32(&memory.download(b, x.len())?),
        })
    }
}
