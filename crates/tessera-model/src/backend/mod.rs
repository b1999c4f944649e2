//! The device operations the model forward is written over.
//!
//! [`crate::families::decoder`] calls only these, so a backend (the CPU; CUDA with
//! `--features cuda`) implements this trait and nothing else. Every operation works row by row with a fixed
//! reduction order, so a sequence's results never depend on which other rows share
//! the batch.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

use crate::batch::FlatBatch;
use crate::error::Result;
use crate::weights::HostMatrix;

/// Rotary embedding parameters in the form every backend consumes: per position,
/// the cosines and sines of each rotated pair (`max_positions x head_dim / 2`).
pub struct RopeTable {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
    pub max_positions: usize,
    pub head_dim: usize,
    pub style: crate::config::RopeStyle,
}

/// Shape of the attention computation, shared by the attention operations.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Scores are `q . k * scale`.
    pub scale: f32,
    pub sliding_window: Option<usize>,
    /// Scores (after the scale) become `cap * tanh(score / cap)` before the
    /// softmax (Gemma 2).
    pub softcap: Option<f32>,
}

/// Geometry of a KV cache pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCacheShape {
    pub num_layers: usize,
    pub num_blocks: usize,
    pub block_size: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub dtype: KvCacheDtype,
}

/// How K and V values are stored. f16, llama.cpp's default, halves the
/// memory (and the memory traffic of decode attention, which reads every
/// cached value every step) at a rounding of each value to 11 bits, smaller
/// than the 8-bit rounding the quantized matmuls apply to activations; f32
/// stores them exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvCacheDtype {
    #[default]
    F16,
    F32,
}

impl KvCacheDtype {
    /// Bytes per stored value.
    pub fn bytes(self) -> usize {
        match self {
            Self::F16 => 2,
            Self::F32 => 4,
        }
    }
}

impl std::str::FromStr for KvCacheDtype {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f16" | "float16" | "half" => Ok(Self::F16),
            "f32" | "float32" | "float" => Ok(Self::F32),
            _ => Err(format!("unknown KV cache type {s:?}: expected f16 or f32")),
        }
    }
}

impl std::fmt::Display for KvCacheDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F16 => "f16",
            Self::F32 => "f32",
        })
    }
}

/// A compute device the model runs on.
pub trait Backend: Send + Sync + 'static {
    /// A row-major matrix of activations (or a vector: one row) on the device.
    type Tensor: Send + Sync;
    /// A linear layer's weight matrix (possibly quantized) plus optional bias.
    type Linear: Send + Sync;
    /// The paged K and V pools of every layer.
    type KvCache: Send;
    /// The rotary table, resident on the device.
    type Rope: Send + Sync;

    /// A short name for logs ("cpu", "cuda:0").
    fn name(&self) -> String;

    /// Runs `op`, one whole forward, where this backend's host-side parallel
    /// operations are cheapest to start. The default runs it in place.
    fn install<R: Send>(&self, op: impl FnOnce() -> R + Send) -> R {
        op()
    }

    // ---- set-up ----

    /// Moves a weight matrix to the device. Several `parts` are one layer whose
    /// outputs are concatenated (Q|K|V, gate|up): the backend may fuse them.
    fn upload_linear(&self, parts: Vec<HostMatrix>, bias: Option<Vec<f32>>)
        -> Result<Self::Linear>;
    /// Moves a vector (norm gains) to the device.
    fn upload_vector(&self, v: Vec<f32>) -> Result<Self::Tensor>;
    /// Moves the rotary table to the device.
    fn upload_rope(&self, rope: RopeTable) -> Result<Self::Rope>;
    /// Allocates the KV pools.
    fn alloc_kv_cache(&self, shape: KvCacheShape) -> Result<Self::KvCache>;

    // ---- the forward's operations ----

    /// Gathers (dequantized) rows of an embedding table.
    fn embedding(&self, table: &Self::Linear, ids: &[u32]) -> Result<Self::Tensor>;
    /// `x * w / rms(x)` per row.
    fn rms_norm(&self, x: &Self::Tensor, w: &Self::Tensor, eps: f32) -> Result<Self::Tensor>;
    /// `residual += x`, then returns the RMS-normed new residual.
    fn add_rms_norm(
        &self,
        residual: &mut Self::Tensor,
        x: &Self::Tensor,
        w: &Self::Tensor,
        eps: f32,
    ) -> Result<Self::Tensor>;
    /// `residual += x / rms(x) * post`, then returns the new residual's
    /// `residual / rms(residual) * w` (Gemma's norm of a sublayer's output
    /// before the add, and the next pre-norm).
    fn add_normed_rms_norm(
        &self,
        residual: &mut Self::Tensor,
        x: &Self::Tensor,
        post: &Self::Tensor,
        w: &Self::Tensor,
        eps: f32,
    ) -> Result<Self::Tensor>;
    /// `x *= s`, every value (Gemma's embedding scale, on the residual stream).
    fn scale(&self, x: &mut Self::Tensor, s: f32) -> Result<()>;
    /// `x = cap * tanh(x / cap)`, every value (Gemma 2's final logit
    /// soft-cap, on [`Backend::logits`]' output).
    fn softcap(&self, x: &mut Self::Tensor, cap: f32) -> Result<()>;
    /// RMSNorm of each `head_dim` slice of the first `num_heads` heads of every row
    /// (Qwen3's Q/K norms), in place. `offset_heads` skips that many heads first.
    fn head_rms_norm(
        &self,
        x: &mut Self::Tensor,
        w: &Self::Tensor,
        offset_heads: usize,
        num_heads: usize,
        head_dim: usize,
        eps: f32,
    ) -> Result<()>;
    /// `x @ w^T + bias`.
    fn linear(&self, x: &Self::Tensor, w: &Self::Linear) -> Result<Self::Tensor>;
    /// The LM head: `x @ lm_head^T`, the logits that go to the host. The
    /// default is [`Backend::linear`]; a backend whose activations are
    /// narrower than f32 (CUDA's bf16) writes these in f32.
    fn logits(&self, x: &Self::Tensor, lm_head: &Self::Linear) -> Result<Self::Tensor> {
        self.linear(x, lm_head)
    }
    /// Rotates the Q and K heads of a fused `[tokens, (H + 2*KV) * D]` projection in
    /// place, then writes each token's K and V into its KV slot.
    fn rotary_and_cache_write(
        &self,
        qkv: &mut Self::Tensor,
        rope: &Self::Rope,
        cache: &mut Self::KvCache,
        layer: usize,
        shape: &AttentionShape,
        batch: &FlatBatch,
    ) -> Result<()>;
    /// Causal attention of each new token over its sequence's paged KV; returns
    /// `[tokens, H * D]`.
    fn paged_attention(
        &self,
        qkv: &Self::Tensor,
        cache: &Self::KvCache,
        layer: usize,
        shape: &AttentionShape,
        batch: &FlatBatch,
    ) -> Result<Self::Tensor>;
    /// `silu(gate) * up` for a fused `[rows, 2 * I]` gate|up projection.
    fn silu_mul(&self, gate_up: &Self::Tensor) -> Result<Self::Tensor>;
    /// `gelu_tanh(gate) * up` for a fused `[rows, 2 * I]` gate|up projection
    /// (GeGLU; GELU's tanh approximation, PyTorch's `gelu(approximate="tanh")`).
    fn gelu_tanh_mul(&self, gate_up: &Self::Tensor) -> Result<Self::Tensor>;
    /// Picks rows (the last token of each sequence that wants logits).
    fn gather_rows(&self, x: &Self::Tensor, rows: &[usize]) -> Result<Self::Tensor>;
    /// Copies a tensor to the host, row-major.
    fn to_host(&self, x: &Self::Tensor) -> Result<Vec<f32>>;
    /// Moves a tensor to the host, row-major (a host backend hands over its
    /// buffer instead of copying it).
    fn take_host(&self, x: Self::Tensor) -> Result<Vec<f32>> {
        self.to_host(&x)
    }
}
