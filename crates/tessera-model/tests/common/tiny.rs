//! Tiny random-weight models written to disk by the tests: GGUF files (any GGML
//! type) and Hugging Face safetensors directories.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

/// Shape of a tiny model; dimensions are multiples of 256 so every k-quant applies.
#[derive(Clone, Copy)]
pub struct TinyShape {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
}

pub const TINY: TinyShape = TinyShape {
    hidden: 256,
    intermediate: 512,
    layers: 2,
    heads: 4,
    kv_heads: 2,
    vocab: 512,
};

impl TinyShape {
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
}

/// Deterministic pseudo-random values in [-scale, scale) (xorshift; no RNG crate).
pub fn random_values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// GGUF-named tensors of a random Llama (or Qwen2 with `bias`) model, f32.
pub fn random_tensors(
    shape: TinyShape,
    seed: u64,
    bias: bool,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let (h, i, d) = (shape.hidden, shape.intermediate, shape.head_dim());
    let q = shape.heads * d;
    let kv = shape.kv_heads * d;
    let mut out = Vec::new();
    let mut n = seed;
    let mut add = |name: String, dims: Vec<usize>, scale: f32, offset: f32| {
        n += 1;
        let len = dims.iter().product();
        let v = random_values(len, n, scale)
            .into_iter()
            .map(|x| x + offset)
            .collect();
        out.push((name, dims, v));
    };
    add("token_embd.weight".into(), vec![shape.vocab, h], 1.0, 0.0);
    for l in 0..shape.layers {
        let w = 1.0 / (h as f32).sqrt();
        add(format!("blk.{l}.attn_norm.weight"), vec![h], 0.2, 1.0);
        add(format!("blk.{l}.attn_q.weight"), vec![q, h], w * 2.0, 0.0);
        add(format!("blk.{l}.attn_k.weight"), vec![kv, h], w * 2.0, 0.0);
        add(format!("blk.{l}.attn_v.weight"), vec![kv, h], w, 0.0);
        if bias {
            add(format!("blk.{l}.attn_q.bias"), vec![q], 0.1, 0.0);
            add(format!("blk.{l}.attn_k.bias"), vec![kv], 0.1, 0.0);
            add(format!("blk.{l}.attn_v.bias"), vec![kv], 0.1, 0.0);
        }
        add(format!("blk.{l}.attn_output.weight"), vec![h, q], w, 0.0);
        add(format!("blk.{l}.ffn_norm.weight"), vec![h], 0.2, 1.0);
        add(format!("blk.{l}.ffn_gate.weight"), vec![i, h], w, 0.0);
        add(format!("blk.{l}.ffn_up.weight"), vec![i, h], w, 0.0);
        add(
            format!("blk.{l}.ffn_down.weight"),
            vec![h, i],
            1.0 / (i as f32).sqrt(),
            0.0,
        );
    }
    add("output_norm.weight".into(), vec![h], 0.2, 1.0);
    add(
        "output.weight".into(),
        vec![shape.vocab, h],
        1.0 / (h as f32).sqrt(),
        0.0,
    );
    out
}

/// Writes a GGUF file; 2-D weights in `dtype`, vectors in f32. `skip` drops
/// tensors by name; `arch` is the `general.architecture` written.
pub fn write_gguf(
    path: &Path,
    shape: TinyShape,
    arch: &str,
    dtype: GgmlDType,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    skip: &[&str],
) {
    write_gguf_full(path, shape, arch, dtype, tensors, skip, &[]);
}

/// [`write_gguf`] with `extra` metadata keys of any type.
pub fn write_gguf_meta(
    path: &Path,
    shape: TinyShape,
    arch: &str,
    dtype: GgmlDType,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    extra: &[(&str, Value)],
) {
    write_gguf_full(path, shape, arch, dtype, tensors, &[], extra);
}

fn write_gguf_full(
    path: &Path,
    shape: TinyShape,
    arch: &str,
    dtype: GgmlDType,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    skip: &[&str],
    extra: &[(&str, Value)],
) {
    let dev = Device::Cpu;
    let qtensors: Vec<(String, QTensor)> = tensors
        .iter()
        .filter(|(name, _, _)| !skip.contains(&name.as_str()))
        .map(|(name, dims, v)| {
            let t = Tensor::from_vec(v.clone(), dims.as_slice(), &dev).expect("tensor");
            let dt = if dims.len() == 2 {
                dtype
            } else {
                GgmlDType::F32
            };
            (name.clone(), QTensor::quantize(&t, dt).expect("quantize"))
        })
        .collect();
    let key = |k: &str| format!("{arch}.{k}");
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (key("context_length"), Value::U32(512)),
        (key("embedding_length"), Value::U32(shape.hidden as u32)),
        (
            key("feed_forward_length"),
            Value::U32(shape.intermediate as u32),
        ),
        (key("block_count"), Value::U32(shape.layers as u32)),
        (key("attention.head_count"), Value::U32(shape.heads as u32)),
        (
            key("attention.head_count_kv"),
            Value::U32(shape.kv_heads as u32),
        ),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
        (key("rope.freq_base"), Value::F32(10000.0)),
        (
            key("rope.dimension_count"),
            Value::U32(shape.head_dim() as u32),
        ),
        (key("vocab_size"), Value::U32(shape.vocab as u32)),
    ];
    // An extra key replaces a default one.
    md.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    md.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = qtensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).expect("create gguf");
    candle_core::quantized::gguf_file::write(&mut f, &md_refs, &t_refs).expect("write gguf");
}

/// Hugging Face name of a GGUF-named tensor of a Llama-shaped model.
pub fn hf_name(gguf: &str) -> String {
    let map = [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
    ];
    if let Some((_, hf)) = map.iter().find(|(g, _)| *g == gguf) {
        return hf.to_string();
    }
    let rest = gguf.strip_prefix("blk.").expect("layer tensor");
    let (layer, t) = rest.split_once('.').expect("layer index");
    let hf = match t {
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_q.bias" => "self_attn.q_proj.bias",
        "attn_k.bias" => "self_attn.k_proj.bias",
        "attn_v.bias" => "self_attn.v_proj.bias",
        "attn_q_norm.weight" => "self_attn.q_norm.weight",
        "attn_qkv.weight" => "self_attn.qkv_proj.weight",
        // Test-only name: Phi-3's fused gate|up (llama.cpp calls it ffn_up).
        "ffn_gate_up.weight" => "mlp.gate_up_proj.weight",
        "attn_k_norm.weight" => "self_attn.k_norm.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        other => panic!("no Hugging Face name for {other}"),
    };
    format!("model.layers.{layer}.{hf}")
}

/// Writes a Hugging Face directory (config.json + model.safetensors in `dtype`) for
/// a `LlamaForCausalLM` or `Qwen2ForCausalLM`; returns the directory.
pub fn write_hf_dir(
    dir: &Path,
    shape: TinyShape,
    architecture: &str,
    dtype: DType,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
) -> PathBuf {
    write_hf_dir_with(
        dir,
        shape,
        architecture,
        dtype,
        tensors,
        &serde_json::json!({}),
    )
}

/// [`write_hf_dir`] with `extra` config.json keys over the defaults.
pub fn write_hf_dir_with(
    dir: &Path,
    shape: TinyShape,
    architecture: &str,
    dtype: DType,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    extra: &serde_json::Value,
) -> PathBuf {
    write_hf_dir_named(dir, shape, architecture, dtype, tensors, extra, &hf_name)
}

/// [`write_hf_dir_with`] with the tensors' Hugging Face names given by `name`.
pub fn write_hf_dir_named(
    dir: &Path,
    shape: TinyShape,
    architecture: &str,
    dtype: DType,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    extra: &serde_json::Value,
    name: &dyn Fn(&str) -> String,
) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    let mut config = serde_json::json!({
        "architectures": [architecture],
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "vocab_size": shape.vocab,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 512,
        "tie_word_embeddings": false,
        "hidden_act": "silu",
        "sliding_window": 512,
        "max_window_layers": shape.layers,
        "use_sliding_window": false,
        "bos_token_id": 1,
        "eos_token_id": 2,
    });
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            config.insert(k.clone(), v.clone());
        }
    }
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config.json");
    let dev = Device::Cpu;
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(tensor_name, dims, v)| {
            let t = Tensor::from_vec(v.clone(), dims.as_slice(), &dev)
                .and_then(|t| t.to_dtype(dtype))
                .expect("tensor");
            (name(tensor_name), t)
        })
        .collect();
    candle_core::safetensors::save(&map, dir.join("model.safetensors")).expect("safetensors");
    dir.to_path_buf()
}

/// A fresh empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tessera-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
