//! BERT: token, position and segment embeddings, then post-norm blocks of
//! bidirectional self-attention and a GELU MLP, then pooling.
//!
//! Runs on the CPU: the linear layers are the CPU backend's (one dot product
//! per output, so batch-invariant); layer norm, GELU and attention are plain
//! row-wise Rust here, each row or sequence computed alone in a fixed order,
//! so a sequence's vector is the same to the bit whatever shares its batch.

use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};
use rayon::prelude::*;

use super::config::{EncoderConfig, Pooling};
use crate::backend::cpu::{CpuLinear, CpuTensor};
use crate::error::{ModelError, Result};
use crate::weights::HostMatrix;

/// Gain and shift of a layer norm.
struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

struct Layer {
    /// Query, key and value stacked: `[3 * hidden, hidden]`.
    qkv: CpuLinear,
    attn_out: CpuLinear,
    attn_norm: LayerNorm,
    intermediate: CpuLinear,
    output: CpuLinear,
    output_norm: LayerNorm,
}

/// A loaded BERT with its pooling.
pub struct BertModel {
    pub config: EncoderConfig,
    word: Vec<f32>,
    position: Vec<f32>,
    /// The first segment's row (every input is one segment).
    token_type: Vec<f32>,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
}

/// The safetensors of a directory, with BERT's names (optionally under `bert.`).
struct Tensors {
    dir: PathBuf,
    files: MmapedSafetensors,
    prefix: &'static str,
}

impl Tensors {
    fn open(dir: &Path) -> Result<Self> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| ModelError::io(dir, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(ModelError::format(dir, "no *.safetensors files"));
        }
        // SAFETY: mapped read-only; model files are not modified while loading.
        let files = unsafe { MmapedSafetensors::multi(&paths) }
            .map_err(|e| ModelError::format(dir, format!("invalid safetensors: {e}")))?;
        let names: Vec<String> = files.tensors().into_iter().map(|(n, _)| n).collect();
        let prefix = if names
            .iter()
            .any(|n| n == "embeddings.word_embeddings.weight")
        {
            ""
        } else {
            "bert."
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            prefix,
        })
    }

    /// A tensor of `shape` as f32 values.
    fn load(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = format!("{}{name}", self.prefix);
        let t = self
            .files
            .load(&full, &Device::Cpu)
            .map_err(|_| ModelError::MissingTensor {
                path: self.dir.clone(),
                name: full.clone(),
            })?;
        if t.dims() != shape {
            return Err(ModelError::ShapeMismatch {
                path: self.dir.clone(),
                name: full,
                expected: shape.to_vec(),
                got: t.dims().to_vec(),
            });
        }
        if !matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16) {
            return Err(ModelError::UnsupportedDtype {
                path: self.dir.clone(),
                name: full,
                dtype: format!("{:?}", t.dtype()),
            });
        }
        t.to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| ModelError::format(&self.dir, format!("tensor '{full}': {e}")))
    }

    fn norm(&self, name: &str, width: usize) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: self.load(&format!("{name}.weight"), &[width])?,
            bias: self.load(&format!("{name}.bias"), &[width])?,
        })
    }

    /// Linear layers `names` (`[rows, cols]` each) stacked into one, with their biases.
    fn linear(&self, names: &[&str], rows: usize, cols: usize) -> Result<CpuLinear> {
        let mut parts = Vec::with_capacity(names.len());
        let mut bias = Vec::with_capacity(rows * names.len());
        for name in names {
            let w = self.load(&format!("{name}.weight"), &[rows, cols])?;
            parts.push(HostMatrix::from_f32(*name, rows, cols, &w));
            bias.extend(self.load(&format!("{name}.bias"), &[rows])?);
        }
        CpuLinear::new(parts, Some(bias))
    }
}

impl BertModel {
    /// Loads the BERT of a Hugging Face directory (safetensors; f32, f16 or bf16).
    pub fn load(dir: &Path) -> Result<Self> {
        let config = EncoderConfig::from_dir(dir)?;
        let t = Tensors::open(dir)?;
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let word = t.load("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let position = t.load(
            "embeddings.position_embeddings.weight",
            &[config.trained_context_len, h],
        )?;
        let types = t.load(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        let embed_norm = t.norm("embeddings.LayerNorm", h)?;
        let layers = (0..config.num_layers)
            .map(|l| {
                let p = format!("encoder.layer.{l}");
                let s = format!("{p}.attention.self");
                Ok(Layer {
                    qkv: t.linear(
                        &[
                            &format!("{s}.query"),
                            &format!("{s}.key"),
                            &format!("{s}.value"),
                        ],
                        h,
                        h,
                    )?,
                    attn_out: t.linear(&[&format!("{p}.attention.output.dense")], h, h)?,
                    attn_norm: t.norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                    intermediate: t.linear(&[&format!("{p}.intermediate.dense")], i, h)?,
                    output: t.linear(&[&format!("{p}.output.dense")], h, i)?,
                    output_norm: t.norm(&format!("{p}.output.LayerNorm"), h)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            word,
            position,
            token_type: types[..h].to_vec(),
            embed_norm,
            layers,
            config,
        })
    }

    /// One pooled (and, if the model says so, normalized) vector per sequence,
    /// `[sequences, hidden]` row-major. Each sequence is a whole input,
    /// special tokens included.
    pub fn embed(&self, sequences: &[&[u32]]) -> Result<Vec<f32>> {
        let c = &self.config;
        let h = c.hidden_size;
        let mut spans = Vec::with_capacity(sequences.len());
        let mut start = 0;
        for s in sequences {
            if s.is_empty() || s.len() > c.trained_context_len {
                return Err(ModelError::InvalidBatch(format!(
                    "an input of {} tokens (this encoder takes 1 to {})",
                    s.len(),
                    c.trained_context_len
                )));
            }
            spans.push((start, s.len()));
            start += s.len();
        }
        let mut x = self.embeddings(sequences)?;
        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x)?;
            let ctx = attention(&qkv, &spans, c.num_heads, c.head_dim());
            let mut a = layer.attn_out.forward(&ctx)?;
            add_norm(&mut a, &x, &layer.attn_norm, c.layer_norm_eps);
            let mut up = layer.intermediate.forward(&a)?;
            gelu(&mut up.data);
            let mut out = layer.output.forward(&up)?;
            add_norm(&mut out, &a, &layer.output_norm, c.layer_norm_eps);
            x = out;
        }
        let mut pooled = vec![0f32; spans.len() * h];
        for (dst, &(start, len)) in pooled.chunks_exact_mut(h).zip(&spans) {
            let rows = &x.data[start * h..(start + len) * h];
            pool(rows, h, c.pooling, dst);
            if c.normalize {
                normalize(dst);
            }
        }
        Ok(pooled)
    }

    /// Word + position + segment embeddings, layer-normed: `[tokens, hidden]`.
    fn embeddings(&self, sequences: &[&[u32]]) -> Result<CpuTensor> {
        let h = self.config.hidden_size;
        let tokens: usize = sequences.iter().map(|s| s.len()).sum();
        let mut x = vec![0f32; tokens * h];
        let mut rows = x.chunks_exact_mut(h);
        for s in sequences {
            for (pos, &id) in s.iter().enumerate() {
                let id = id as usize;
                if id >= self.config.vocab_size {
                    return Err(ModelError::InvalidBatch(format!(
                        "token id {id} is outside the vocabulary of {}",
                        self.config.vocab_size
                    )));
                }
                let Some(row) = rows.next() else {
                    break;
                };
                let word = &self.word[id * h..(id + 1) * h];
                let position = &self.position[pos * h..(pos + 1) * h];
                for (((o, w), p), t) in row.iter_mut().zip(word).zip(position).zip(&self.token_type)
                {
                    *o = w + p + t;
                }
            }
        }
        let mut x = CpuTensor::new(x, tokens, h);
        x.data
            .par_chunks_exact_mut(h)
            .for_each(|row| layer_norm(row, &self.embed_norm, self.config.layer_norm_eps));
        Ok(x)
    }
}

/// `x = layer_norm(x + residual)`, row by row.
fn add_norm(x: &mut CpuTensor, residual: &CpuTensor, norm: &LayerNorm, eps: f32) {
    let h = x.cols;
    x.data
        .par_chunks_exact_mut(h)
        .zip(residual.data.par_chunks_exact(h))
        .for_each(|(row, res)| {
            for (v, r) in row.iter_mut().zip(res) {
                *v += r;
            }
            layer_norm(row, norm, eps);
        });
}

/// Normalizes one row to zero mean and unit variance, then scales and shifts
/// it (statistics accumulated in f64).
fn layer_norm(row: &mut [f32], norm: &LayerNorm, eps: f32) {
    let n = row.len() as f64;
    let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = row
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let inv = 1.0 / (var + f64::from(eps)).sqrt();
    for ((v, w), b) in row.iter_mut().zip(&norm.weight).zip(&norm.bias) {
        *v = ((f64::from(*v) - mean) * inv) as f32 * w + b;
    }
}

/// GELU in its exact (erf) form, as BERT was trained with.
fn gelu(x: &mut [f32]) {
    x.par_chunks_mut(4096).for_each(|chunk| {
        for v in chunk {
            *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    });
}

/// erf to within 1.5e-7 (Abramowitz and Stegun 7.1.26), evaluated in f64.
fn erf(x: f32) -> f32 {
    let x = f64::from(x);
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = 1.0 - poly * (-x * x).exp();
    (if x < 0.0 { -y } else { y }) as f32
}

/// Bidirectional attention of every token over its own sequence:
/// `qkv` is `[tokens, 3 * hidden]` (Q | K | V), the result `[tokens, hidden]`.
fn attention(qkv: &CpuTensor, spans: &[(usize, usize)], heads: usize, d: usize) -> CpuTensor {
    let h = heads * d;
    let tokens = qkv.rows;
    let scale = 1.0 / (d as f32).sqrt();
    let mut owner = Vec::with_capacity(tokens);
    for &(start, len) in spans {
        owner.extend(std::iter::repeat_n((start, len), len));
    }
    let mut out = vec![0f32; tokens * h];
    out.par_chunks_exact_mut(h)
        .zip(owner.par_iter())
        .enumerate()
        .for_each(|(t, (row, &(start, len)))| {
            let q = &qkv.data[t * 3 * h..t * 3 * h + h];
            let mut scores = vec![0f32; len];
            for head in 0..heads {
                let qh = &q[head * d..(head + 1) * d];
                let mut max = f32::NEG_INFINITY;
                for (j, s) in scores.iter_mut().enumerate() {
                    let k0 = (start + j) * 3 * h + h + head * d;
                    let k = &qkv.data[k0..k0 + d];
                    *s = qh.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
                    max = max.max(*s);
                }
                let mut sum = 0f32;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let dst = &mut row[head * d..(head + 1) * d];
                for (j, s) in scores.iter().enumerate() {
                    let v0 = (start + j) * 3 * h + 2 * h + head * d;
                    let v = &qkv.data[v0..v0 + d];
                    let p = s / sum;
                    for (o, x) in dst.iter_mut().zip(v) {
                        *o += p * x;
                    }
                }
            }
        });
    CpuTensor::new(out, tokens, h)
}

/// One sequence's hidden states (`rows`, `[len, h]`) pooled into `dst`.
pub(crate) fn pool(rows: &[f32], h: usize, pooling: Pooling, dst: &mut [f32]) {
    let len = rows.len() / h;
    match pooling {
        Pooling::Cls => dst.copy_from_slice(&rows[..h]),
        Pooling::LastToken => dst.copy_from_slice(&rows[(len - 1) * h..]),
        Pooling::Mean => {
            for (i, o) in dst.iter_mut().enumerate() {
                let sum: f64 = (0..len).map(|r| f64::from(rows[r * h + i])).sum();
                *o = (sum / len as f64) as f32;
            }
        }
    }
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    if norm > 0.0 {
        for x in v {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}
