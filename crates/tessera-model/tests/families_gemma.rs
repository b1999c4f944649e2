//! Gemma 2 and Gemma 3 against candle-transformers' models of the family
//! (`gemma2`, `gemma3`) on the same tiny random weights (safetensors): the
//! prompt's last-token logits within 1e-4 of the largest logit, and the same
//! greedy token. The head size (32) is not hidden / heads (64), the norm
//! gains are stored as Hugging Face stores them (`w` of `1 + w`), and the
//! soft-caps and window are small enough to change the logits (shown by
//! candle without them).
//!
//! Where candle departs from Hugging Face, the test follows Hugging Face:
//! - candle scales scores by `1 / sqrt(head_dim)`, Hugging Face by
//!   `1 / sqrt(query_pre_attn_scalar)`: candle's copy of the weights has its
//!   queries scaled by `sqrt(head_dim / query_pre_attn_scalar)` (through
//!   `q_proj` for Gemma 2, through the per-head Q norm for Gemma 3, which
//!   would undo a scaled `q_proj`), which is the same computation;
//! - candle's Gemma 2 slides every layer, Hugging Face's only the even ones:
//!   the Gemma 2 window is longer than the prompt (the alternation is
//!   checked with Gemma 3, where candle alternates as Hugging Face does);
//! - candle's Gemma 3 cannot take a whole prompt longer than its window in
//!   one forward (its rotating cache fails), so it reads the prompt a token
//!   at a time, where its window keeps as many keys as Hugging Face's;
//! - candle has no rope scaling for Gemma 3: the test model has none.

mod common;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;
use candle_core::DType;
use common::tiny::*;
use common::*;
use serde_json::json;

/// Not hidden / heads (256 / 4).
const HEAD_DIM: usize = 32;
/// Scores are scaled by `1 / sqrt(this)`, not `1 / sqrt(HEAD_DIM)`.
const QUERY_PRE_ATTN_SCALAR: usize = 64;

type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// GGUF-named tensors of a random Gemma: four norms per layer (gains as
/// Hugging Face stores them: `w` of `1 + w`), Q/K norms with `qk_norm`, no
/// `output.weight` (the LM head is the embedding table).
fn gemma_tensors(seed: u64, qk_norm: bool) -> Tensors {
    let (h, i, d) = (TINY.hidden, TINY.intermediate, HEAD_DIM);
    let (q, kv) = (TINY.heads * d, TINY.kv_heads * d);
    let mut out = Vec::new();
    let mut n = seed;
    let mut add = |name: String, dims: Vec<usize>, scale: f32| {
        n += 1;
        let len = dims.iter().product();
        out.push((name, dims, random_values(len, n, scale)));
    };
    // Scaled by sqrt(256) = 16 at the input.
    add("token_embd.weight".into(), vec![TINY.vocab, h], 0.1);
    let w = 1.0 / (h as f32).sqrt();
    for l in 0..TINY.layers {
        for norm in [
            "attn_norm",
            "post_attention_norm",
            "ffn_norm",
            "post_ffw_norm",
        ] {
            add(format!("blk.{l}.{norm}.weight"), vec![h], 0.3);
        }
        if qk_norm {
            add(format!("blk.{l}.attn_q_norm.weight"), vec![d], 0.3);
            add(format!("blk.{l}.attn_k_norm.weight"), vec![d], 0.3);
        }
        add(format!("blk.{l}.attn_q.weight"), vec![q, h], w * 2.0);
        add(format!("blk.{l}.attn_k.weight"), vec![kv, h], w * 2.0);
        add(format!("blk.{l}.attn_v.weight"), vec![kv, h], w);
        add(
            format!("blk.{l}.attn_output.weight"),
            vec![h, q],
            1.0 / (q as f32).sqrt(),
        );
        add(format!("blk.{l}.ffn_gate.weight"), vec![i, h], w);
        add(format!("blk.{l}.ffn_up.weight"), vec![i, h], w);
        add(
            format!("blk.{l}.ffn_down.weight"),
            vec![h, i],
            1.0 / (i as f32).sqrt(),
        );
    }
    add("output_norm.weight".into(), vec![h], 0.3);
    out
}

/// Hugging Face names of Gemma's norms, Llama's for the rest.
fn gemma_hf_name(gguf: &str) -> String {
    let renames = [
        (
            "post_attention_norm.weight",
            "post_attention_layernorm.weight",
        ),
        ("ffn_norm.weight", "pre_feedforward_layernorm.weight"),
        ("post_ffw_norm.weight", "post_feedforward_layernorm.weight"),
    ];
    for (from, to) in renames {
        if let Some(layer) = gguf
            .strip_prefix("blk.")
            .and_then(|rest| rest.strip_suffix(&format!(".{from}")))
        {
            return format!("model.layers.{layer}.{to}");
        }
    }
    hf_name(gguf)
}

/// `tensors` with `f` applied to the values of those named `name`.
fn map_values(tensors: &Tensors, name: &str, f: impl Fn(f32) -> f32) -> Tensors {
    tensors
        .iter()
        .map(|(n, dims, v)| {
            let v = if n.contains(name) {
                v.iter().map(|&x| f(x)).collect()
            } else {
                v.clone()
            };
            (n.clone(), dims.clone(), v)
        })
        .collect()
}

/// How much candle's `1 / sqrt(head_dim)` must grow the queries to give
/// Hugging Face's `1 / sqrt(query_pre_attn_scalar)`.
fn query_factor() -> f32 {
    (HEAD_DIM as f32 / QUERY_PRE_ATTN_SCALAR as f32).sqrt()
}

fn write(dir: &std::path::Path, arch: &str, tensors: &Tensors, config: &serde_json::Value) {
    write_hf_dir_named(dir, TINY, arch, DType::F32, tensors, config, &gemma_hf_name);
}

/// Gemma 2 from Hugging Face files and from a GGUF file as llama.cpp's
/// converter writes it (gains `1 + w`, no `query_pre_attn_scalar`).
#[test]
fn hf_and_gguf_gemma2_match_candle_gemma2() {
    use candle_transformers::models::gemma2::{Config, Model};
    let dir = temp_dir("hf-gemma2");
    let tensors = gemma_tensors(41, false);
    let config = json!({
        "model_type": "gemma2",
        "head_dim": HEAD_DIM,
        "hidden_activation": "gelu_pytorch_tanh",
        "query_pre_attn_scalar": QUERY_PRE_ATTN_SCALAR,
        "attn_logit_softcapping": 1.5,
        "final_logit_softcapping": 2.0,
        "sliding_window": 64,
        "tie_word_embeddings": true,
        "attention_bias": false,
    });
    write(&dir.join("hf"), "Gemma2ForCausalLM", &tensors, &config);
    let ours = f32_kv_logits(&dir.join("hf"), &REFERENCE_PROMPT);

    let q = query_factor();
    let candle_tensors = map_values(&tensors, "attn_q.weight", |x| x * q);
    write(
        &dir.join("candle"),
        "Gemma2ForCausalLM",
        &candle_tensors,
        &config,
    );
    let text = std::fs::read_to_string(dir.join("hf/config.json")).expect("config");
    let mut config: Config = serde_json::from_str(&text).expect("gemma2 config");
    let candle_logits = |config: &Config| -> Vec<f32> {
        let mut model =
            Model::new(false, config, weights(&dir.join("candle"))).expect("candle gemma2");
        model
            .forward(&input(&REFERENCE_PROMPT), 0)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .expect("candle forward")
    };
    let theirs = candle_logits(&config);
    compare("gemma2", &ours, &theirs);

    // The soft-caps are really applied: without them candle's logits differ.
    config.attn_logit_softcapping = None;
    config.final_logit_softcapping = None;
    assert!(
        max_abs_diff(&ours, &candle_logits(&config)) > 1e-2,
        "the caps changed nothing"
    );

    // llama.cpp's GGUF of the same model: gains stored as 1 + w, scores
    // scaled by 1 / sqrt(head_dim) (it writes no query_pre_attn_scalar).
    let gguf_tensors = candle_tensors
        .iter()
        .map(|(n, dims, v)| {
            let v = if n.ends_with("norm.weight") {
                v.iter().map(|x| x + 1.0).collect()
            } else {
                v.clone()
            };
            (n.clone(), dims.clone(), v)
        })
        .collect::<Vec<_>>();
    let path = dir.join("gemma2.gguf");
    write_gguf_meta(
        &path,
        TINY,
        "gemma2",
        GgmlDType::F32,
        &gguf_tensors,
        &[
            ("gemma2.attention.key_length", Value::U32(HEAD_DIM as u32)),
            ("gemma2.attention.value_length", Value::U32(HEAD_DIM as u32)),
            ("gemma2.attention.sliding_window", Value::U32(64)),
            ("gemma2.attn_logit_softcapping", Value::F32(1.5)),
            ("gemma2.final_logit_softcapping", Value::F32(2.0)),
        ],
    );
    compare(
        "gemma2 gguf",
        &f32_kv_logits(&path, &REFERENCE_PROMPT),
        &theirs,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Gemma 3: per-head Q/K norms, layer 0 sliding (window 6 over 21 tokens,
/// local rotary base 10 000) and layer 1 global (base 10^6).
#[test]
fn hf_gemma3_matches_candle_gemma3() {
    use candle_transformers::models::gemma3::{Config, Model};
    const WINDOW: usize = 6;
    let dir = temp_dir("hf-gemma3");
    let tensors = gemma_tensors(43, true);
    let config = json!({
        "model_type": "gemma3_text",
        "head_dim": HEAD_DIM,
        "hidden_activation": "gelu_pytorch_tanh",
        "query_pre_attn_scalar": QUERY_PRE_ATTN_SCALAR,
        "attn_logit_softcapping": null,
        "final_logit_softcapping": null,
        "sliding_window": WINDOW,
        "sliding_window_pattern": 2,
        "rope_theta": 1_000_000.0,
        "rope_local_base_freq": 10_000.0,
        "tie_word_embeddings": true,
        "attention_bias": false,
    });
    write(&dir.join("hf"), "Gemma3ForCausalLM", &tensors, &config);
    let ours = f32_kv_logits(&dir.join("hf"), &REFERENCE_PROMPT);

    // Candle's queries grow through the Q norm's gain: 1 + w' = q (1 + w).
    let q = query_factor();
    let candle_tensors = map_values(&tensors, "attn_q_norm.weight", |w| q * (1.0 + w) - 1.0);
    write(
        &dir.join("candle"),
        "Gemma3ForCausalLM",
        &candle_tensors,
        &config,
    );
    let text = std::fs::read_to_string(dir.join("hf/config.json")).expect("config");
    let config: Config = serde_json::from_str(&text).expect("gemma3 config");
    // One token at a time: candle's rotating cache fails on a whole prompt
    // longer than the window ("slice-set only supports contiguous
    // tensors"), and a decode step keeps exactly `sliding_window` keys, as
    // Hugging Face does.
    let candle_logits = |config: &Config| -> Vec<f32> {
        let mut model =
            Model::new(false, config, weights(&dir.join("candle"))).expect("candle gemma3");
        let mut last = Vec::new();
        for (pos, &token) in REFERENCE_PROMPT.iter().enumerate() {
            last = model
                .forward(&input(&[token]), pos)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .expect("candle forward");
        }
        last
    };
    compare("gemma3", &ours, &candle_logits(&config));
    // The window is really applied: without it candle's logits differ.
    let unwindowed = Config {
        sliding_window: 100,
        ..config
    };
    assert!(
        max_abs_diff(&ours, &candle_logits(&unwindowed)) > 1e-2,
        "the window changed nothing"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Gemma 2 GGUF: layer 0 slides, layer 1 is global; Gemma 3 GGUF: five in
/// six slide, the local layers on base 10 000, linear scaling read.
#[test]
fn gguf_gemma_configs_follow_llama_cpp() {
    let dir = temp_dir("gguf-gemma-config");
    let shape = TinyShape { layers: 6, ..TINY };
    let read = |arch: &str, extra: &[(&str, Value)]| {
        let path = dir.join(format!("{arch}.gguf"));
        write_gguf_meta(&path, shape, arch, GgmlDType::F32, &[], extra);
        tessera_model::loader::read_config(&tessera_model::loader::ModelSource::Gguf(path))
            .expect("config")
    };
    let g2 = read(
        "gemma2",
        &[("gemma2.attention.sliding_window", Value::U32(4096))],
    );
    let windows: Vec<_> = (0..6).map(|l| g2.layer_window(l)).collect();
    assert_eq!(
        windows,
        [Some(4096), None, Some(4096), None, Some(4096), None]
    );
    assert_eq!(g2.embedding_scale, Some(16.0));
    assert_eq!(g2.norm_gain_offset, 0.0, "the converter stored 1 + w");
    let g3 = read(
        "gemma3",
        &[
            ("gemma3.attention.sliding_window", Value::U32(512)),
            ("gemma3.rope.freq_base", Value::F32(1e6)),
            ("gemma3.rope.scaling.type", Value::String("linear".into())),
            ("gemma3.rope.scaling.factor", Value::F32(8.0)),
        ],
    );
    let sliding: Vec<_> = (0..6).map(|l| g3.layer_window(l).is_some()).collect();
    assert_eq!(sliding, [true, true, true, true, true, false]);
    assert_eq!((g3.rope_theta, g3.rope_local_theta), (1e6, Some(10_000.0)));
    assert_eq!(
        g3.rope_scaling,
        Some(tessera_model::config::RopeScaling::Linear { factor: 8.0 })
    );
    assert!(g3.qk_norm && g3.sandwich_norms);
    let _ = std::fs::remove_dir_all(&dir);
}
