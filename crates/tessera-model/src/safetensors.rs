//! Hugging Face model directories: `config.json` plus one or more `*.safetensors`
//! files (bf16, f16 or f32). Hugging Face tensor names are mapped onto the GGUF
//! names the loader uses: Llama's table below, after the family's own
//! ([`Family::layer_tensors`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};

use crate::error::{ModelError, Result};
use crate::families::Family;
use crate::weights::{HostMatrix, TensorSource};

/// The safetensors files of a Hugging Face model directory.
pub struct SafetensorsDir {
    /// The directory, named in errors.
    dir: PathBuf,
    tensors: MmapedSafetensors,
    /// GGUF name → Hugging Face name, for every tensor present.
    names: HashMap<String, String>,
    family: &'static Family,
}

impl SafetensorsDir {
    /// Memory-maps every `*.safetensors` file of `dir`, a model of `family`.
    pub fn open(dir: &Path, family: &'static Family) -> Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| ModelError::io(dir, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(ModelError::format(dir, "no *.safetensors files"));
        }
        // SAFETY: the files are mapped read-only; tessera does not modify model files
        // while serving, and a user who does so gets undefined weights, as with any
        // mmap-based loader.
        let tensors = unsafe { MmapedSafetensors::multi(&files) }
            .map_err(|e| ModelError::format(dir, format!("invalid safetensors: {e}")))?;
        let names = tensors
            .tensors()
            .into_iter()
            .filter_map(|(hf, _)| gguf_name(family, &hf).map(|g| (g, hf)))
            .collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            tensors,
            names,
            family,
        })
    }

    fn hf_name(&self, name: &str) -> Result<&str> {
        self.names
            .get(name)
            .map(|s| s.as_str())
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.dir.clone(),
                name: hf_name_hint(self.family, name),
            })
    }

    fn load_f32(&self, name: &str) -> Result<Vec<f32>> {
        let hf = self.hf_name(name)?;
        let err =
            |e: candle_core::Error| ModelError::format(&self.dir, format!("tensor '{hf}': {e}"));
        let t = self.tensors.load(hf, &Device::Cpu).map_err(err)?;
        match t.dtype() {
            DType::F32 | DType::F16 | DType::BF16 => {}
            other => {
                return Err(ModelError::UnsupportedDtype {
                    path: self.dir.clone(),
                    name: hf.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        }
        t.to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(err)
    }
}

impl TensorSource for SafetensorsDir {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn contains(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        let hf = self.hf_name(name)?;
        self.tensors
            .get(hf)
            .map(|v| v.shape().to_vec())
            .map_err(|e| ModelError::format(&self.dir, format!("tensor '{hf}': {e}")))
    }

    fn matrix(&mut self, name: &str) -> Result<HostMatrix> {
        let shape = self.shape(name)?;
        let [rows, cols] = shape[..] else {
            return Err(ModelError::format(
                &self.dir,
                format!("tensor '{}' is not a matrix", self.hf_name(name)?),
            ));
        };
        let values = self.load_f32(name)?;
        Ok(HostMatrix::from_f32(name, rows, cols, &values))
    }

    fn vector(&mut self, name: &str) -> Result<Vec<f32>> {
        self.load_f32(name)
    }
}

/// Hugging Face names of whole-model tensors, with their GGUF names.
const MODEL_NAMES: &[(&str, &str)] = &[
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
];

/// Hugging Face names of per-layer tensors (after `model.layers.N.`), with their
/// GGUF names (after `blk.N.`).
const LAYER_NAMES: &[(&str, &str)] = &[
    ("input_layernorm.weight", "attn_norm.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.q_proj.bias", "attn_q.bias"),
    ("self_attn.k_proj.bias", "attn_k.bias"),
    ("self_attn.v_proj.bias", "attn_v.bias"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("self_attn.q_norm.weight", "attn_q_norm.weight"),
    ("self_attn.k_norm.weight", "attn_k_norm.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
];

/// Translates a tensor name of a `family` model between the two conventions,
/// `from` being the index of the source convention in the tables (0: Hugging
/// Face, 1: GGUF).
fn translate(family: &Family, name: &str, from: usize) -> Option<String> {
    let pick =
        |pair: &(&'static str, &'static str)| if from == 0 { *pair } else { (pair.1, pair.0) };
    if let Some((_, to)) = MODEL_NAMES.iter().map(pick).find(|(f, _)| *f == name) {
        return Some(to.to_string());
    }
    let (prefix_from, prefix_to) = if from == 0 {
        ("model.layers.", "blk.")
    } else {
        ("blk.", "model.layers.")
    };
    let (layer, tail) = name.strip_prefix(prefix_from)?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (_, to) = family
        .layer_tensors
        .iter()
        .chain(LAYER_NAMES)
        .map(pick)
        .find(|(f, _)| *f == tail)?;
    Some(format!("{prefix_to}{layer}.{to}"))
}

/// Maps a Hugging Face tensor name to its GGUF name.
fn gguf_name(family: &Family, hf: &str) -> Option<String> {
    translate(family, hf, 0)
}

/// The Hugging Face name a missing GGUF-named tensor would have, for errors.
fn hf_name_hint(family: &Family, gguf: &str) -> String {
    translate(family, gguf, 1).unwrap_or_else(|| gguf.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        let llama = crate::families::by_hf_name("LlamaForCausalLM").expect("llama");
        for hf in [
            "model.embed_tokens.weight",
            "lm_head.weight",
            "model.layers.7.self_attn.k_proj.bias",
            "model.layers.12.mlp.down_proj.weight",
            "model.layers.0.self_attn.q_norm.weight",
        ] {
            let g = gguf_name(llama, hf).expect("mapped");
            assert_eq!(hf_name_hint(llama, &g), hf);
        }
        assert_eq!(gguf_name(llama, "model.layers.x.mlp.up_proj.weight"), None);
        assert_eq!(gguf_name(llama, "model.rotary_emb.inv_freq"), None);
    }

    /// Gemma's `post_attention_layernorm` norms the attention output; its
    /// pre-MLP norm is `pre_feedforward_layernorm`, Llama's `ffn_norm`.
    #[test]
    fn family_names_come_first() {
        let gemma = crate::families::by_hf_name("Gemma2ForCausalLM").expect("gemma2");
        let llama = crate::families::by_hf_name("LlamaForCausalLM").expect("llama");
        let post = "model.layers.3.post_attention_layernorm.weight";
        assert_eq!(
            gguf_name(gemma, post).as_deref(),
            Some("blk.3.post_attention_norm.weight")
        );
        assert_eq!(
            gguf_name(llama, post).as_deref(),
            Some("blk.3.ffn_norm.weight")
        );
        assert_eq!(
            hf_name_hint(gemma, "blk.0.ffn_norm.weight"),
            "model.layers.0.pre_feedforward_layernorm.weight"
        );
    }
}
