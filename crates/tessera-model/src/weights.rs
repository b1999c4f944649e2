//! Loading a decoder model's weights from any [`TensorSource`] onto a backend.
//!
//! Tensor names are GGUF's (`blk.0.attn_q.weight`); the safetensors source maps
//! Hugging Face names onto them. Every tensor's shape is checked against the
//! configuration before it reaches the backend.

use std::path::Path;

use candle_core::quantized::GgmlDType;

use crate::backend::Backend;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};

/// A weight matrix on the host in its stored type: `rows` output features of
/// `cols` inputs each, rows contiguous (GGML layout). Dense weights are always
/// `F32` here; quantized ones keep their blocks.
#[derive(Clone)]
pub struct HostMatrix {
    pub name: String,
    pub dtype: GgmlDType,
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for HostMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HostMatrix({} {:?} {}x{})",
            self.name, self.dtype, self.rows, self.cols
        )
    }
}

impl HostMatrix {
    /// A dense matrix from f32 values.
    pub fn from_f32(name: impl Into<String>, rows: usize, cols: usize, values: &[f32]) -> Self {
        let mut data = Vec::with_capacity(values.len() * 4);
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        Self {
            name: name.into(),
            dtype: GgmlDType::F32,
            rows,
            cols,
            data,
        }
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.cols / self.dtype.block_size() * self.dtype.type_size()
    }
}

/// A file (or set of files) holding named tensors.
pub trait TensorSource {
    /// The file named in errors.
    fn path(&self) -> &Path;
    /// Whether a tensor exists, by GGUF name.
    fn contains(&self, name: &str) -> bool;
    /// Shape of a tensor, outermost dimension first.
    fn shape(&self, name: &str) -> Result<Vec<usize>>;
    /// A 2-D tensor as a [`HostMatrix`].
    fn matrix(&mut self, name: &str) -> Result<HostMatrix>;
    /// A 1-D tensor as f32.
    fn vector(&mut self, name: &str) -> Result<Vec<f32>>;
}

/// One transformer block's weights on the backend.
pub struct LayerWeights<B: Backend> {
    pub attn_norm: B::Tensor,
    /// Fused Q|K|V projection (with bias for Qwen2).
    pub qkv: B::Linear,
    pub q_norm: Option<B::Tensor>,
    pub k_norm: Option<B::Tensor>,
    pub o: B::Linear,
    /// Norm of the attention output before the residual add (Gemma).
    pub post_attn_norm: Option<B::Tensor>,
    pub ffn_norm: B::Tensor,
    /// Norm of the MLP output before the residual add (Gemma).
    pub post_ffn_norm: Option<B::Tensor>,
    /// Fused gate|up projection.
    pub gate_up: B::Linear,
    pub down: B::Linear,
}

/// A whole model's weights on the backend.
pub struct DecoderWeights<B: Backend> {
    pub embedding: B::Linear,
    pub layers: Vec<LayerWeights<B>>,
    pub final_norm: B::Tensor,
    pub lm_head: B::Linear,
    /// Per-frequency divisors of the rotary embedding (GGUF `rope_freqs.weight`,
    /// Llama 3.1), if the file has them.
    pub rope_freq_factors: Option<Vec<f32>>,
}

/// Reads every tensor the configuration calls for, checks its shape, and uploads it.
/// Sets `config.tie_word_embeddings` when the file has no separate output matrix.
pub fn load_weights<B: Backend>(
    backend: &B,
    src: &mut dyn TensorSource,
    config: &mut ModelConfig,
) -> Result<DecoderWeights<B>> {
    let c = config.clone();
    let mut loader = Loader { src };
    // RMSNorm gains, plus the family's offset (Gemma's `1 + w`).
    let norm = |loader: &mut Loader<'_>, name: &str, len: usize| -> Result<B::Tensor> {
        let mut gains = loader.vector(name, len)?;
        if c.norm_gain_offset != 0.0 {
            for g in &mut gains {
                *g += c.norm_gain_offset;
            }
        }
        backend.upload_vector(gains)
    };
    let embedding = loader.matrix("token_embd.weight", c.vocab_size, c.hidden_size)?;
    let lm_head = if loader.src.contains("output.weight") {
        config.tie_word_embeddings = false;
        loader.matrix("output.weight", c.vocab_size, c.hidden_size)?
    } else {
        config.tie_word_embeddings = true;
        embedding.clone()
    };
    if c.fused_projections && loader.src.contains("rope_factors_long.weight") {
        return Err(ModelError::format(
            loader.src.path(),
            "LongRoPE (rope_factors_long, Phi-3's 128k variants) is not supported",
        ));
    }
    let mut layers = Vec::with_capacity(c.num_layers);
    for i in 0..c.num_layers {
        let name = |t: &str| format!("blk.{i}.{t}");
        let qkv_parts = if c.fused_projections {
            vec![loader.matrix(&name("attn_qkv.weight"), c.qkv_width(), c.hidden_size)?]
        } else {
            vec![
                loader.matrix(&name("attn_q.weight"), c.q_width(), c.hidden_size)?,
                loader.matrix(&name("attn_k.weight"), c.kv_width(), c.hidden_size)?,
                loader.matrix(&name("attn_v.weight"), c.kv_width(), c.hidden_size)?,
            ]
        };
        let qkv_bias = if c.qkv_bias {
            let mut b = loader.vector(&name("attn_q.bias"), c.q_width())?;
            b.extend(loader.vector(&name("attn_k.bias"), c.kv_width())?);
            b.extend(loader.vector(&name("attn_v.bias"), c.kv_width())?);
            Some(b)
        } else {
            None
        };
        let (q_norm, k_norm) = if c.qk_norm {
            (
                Some(norm(&mut loader, &name("attn_q_norm.weight"), c.head_dim)?),
                Some(norm(&mut loader, &name("attn_k_norm.weight"), c.head_dim)?),
            )
        } else {
            (None, None)
        };
        let (post_attn_norm, post_ffn_norm) = if c.sandwich_norms {
            (
                Some(norm(
                    &mut loader,
                    &name("post_attention_norm.weight"),
                    c.hidden_size,
                )?),
                Some(norm(
                    &mut loader,
                    &name("post_ffw_norm.weight"),
                    c.hidden_size,
                )?),
            )
        } else {
            (None, None)
        };
        let gate_up_parts = if c.fused_projections {
            let rows = 2 * c.intermediate_size;
            vec![loader.matrix(&name("ffn_up.weight"), rows, c.hidden_size)?]
        } else {
            vec![
                loader.matrix(&name("ffn_gate.weight"), c.intermediate_size, c.hidden_size)?,
                loader.matrix(&name("ffn_up.weight"), c.intermediate_size, c.hidden_size)?,
            ]
        };
        layers.push(LayerWeights {
            attn_norm: norm(&mut loader, &name("attn_norm.weight"), c.hidden_size)?,
            qkv: backend.upload_linear(qkv_parts, qkv_bias)?,
            q_norm,
            k_norm,
            o: backend.upload_linear(
                vec![loader.matrix(&name("attn_output.weight"), c.hidden_size, c.q_width())?],
                None,
            )?,
            post_attn_norm,
            ffn_norm: norm(&mut loader, &name("ffn_norm.weight"), c.hidden_size)?,
            post_ffn_norm,
            gate_up: backend.upload_linear(gate_up_parts, None)?,
            down: backend.upload_linear(
                vec![loader.matrix(
                    &name("ffn_down.weight"),
                    c.hidden_size,
                    c.intermediate_size,
                )?],
                None,
            )?,
        });
    }
    let final_norm = norm(&mut loader, "output_norm.weight", c.hidden_size)?;
    let rope_freq_factors = if loader.src.contains("rope_freqs.weight") {
        Some(loader.vector("rope_freqs.weight", c.head_dim / 2)?)
    } else {
        None
    };
    Ok(DecoderWeights {
        embedding: backend.upload_linear(vec![embedding], None)?,
        layers,
        final_norm,
        lm_head: backend.upload_linear(vec![lm_head], None)?,
        rope_freq_factors,
    })
}

/// Shape-checked reads from a source.
struct Loader<'a> {
    src: &'a mut dyn TensorSource,
}

impl Loader<'_> {
    fn check_shape(&self, name: &str, expected: &[usize]) -> Result<()> {
        if !self.src.contains(name) {
            return Err(ModelError::MissingTensor {
                path: self.src.path().to_path_buf(),
                name: name.to_string(),
            });
        }
        let got = self.src.shape(name)?;
        if got != expected {
            return Err(ModelError::ShapeMismatch {
                path: self.src.path().to_path_buf(),
                name: name.to_string(),
                expected: expected.to_vec(),
                got,
            });
        }
        Ok(())
    }

    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<HostMatrix> {
        self.check_shape(name, &[rows, cols])?;
        self.src.matrix(name)
    }

    fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>> {
        self.check_shape(name, &[len])?;
        self.src.vector(name)
    }
}
