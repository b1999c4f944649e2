//! Model families beyond Llama and Qwen2 against candle-transformers' models
//! of the same family, on the same tiny random weights (safetensors): the
//! Qwen3, Mistral and Phi-3: the prompt's last-token logits within a relative tolerance of 1e-4 of the
//! largest logit (same math, different summation order), and the same
//! greedy token. Also: a GGUF mixture of experts is refused at load.

mod common;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;
use candle_core::DType;
use common::tiny::*;
use common::*;
use serde_json::json;
use tessera_engine::Runner;
use tessera_model::backend::KvCacheDtype;

/// Qwen3: Llama plus RMSNorm over each head of Q and K before the rotation.
#[test]
fn hf_qwen3_matches_candle_qwen3() {
    use candle_transformers::models::qwen3::{Config, ModelForCausalLM};
    let dir = temp_dir("hf-qwen3");
    let d = TINY.head_dim();
    let mut tensors = random_tensors(TINY, 17, false);
    for l in 0..TINY.layers {
        for (i, name) in ["attn_q_norm", "attn_k_norm"].iter().enumerate() {
            let gains = random_values(d, 100 + (l * 2 + i) as u64, 0.3)
                .into_iter()
                .map(|x| x + 1.0)
                .collect();
            tensors.push((format!("blk.{l}.{name}.weight"), vec![d], gains));
        }
    }
    let extra = json!({"model_type": "qwen3", "head_dim": d, "attention_bias": false});
    write_hf_dir_with(&dir, TINY, "Qwen3ForCausalLM", DType::F32, &tensors, &extra);
    let ours = f32_kv_logits(&dir, &REFERENCE_PROMPT);
    let text = std::fs::read_to_string(dir.join("config.json")).expect("config");
    let config: Config = serde_json::from_str(&text).expect("qwen3 config");
    let mut model = ModelForCausalLM::new(&config, weights(&dir)).expect("candle qwen3");
    let theirs: Vec<f32> = model
        .forward(&input(&REFERENCE_PROMPT), 0)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("candle forward");
    compare("qwen3", &ours, &theirs);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Mistral: Llama whose attention sees only the last `sliding_window`
/// positions. candle's mask keeps keys with `j + w >= i`, one more than
/// Hugging Face's and vLLM's `i - j < w` (which tessera follows), so candle
/// runs with a window one smaller; a window of 6 over 21 tokens matters
/// for every token past the sixth.
#[test]
fn hf_mistral_sliding_window_matches_candle_mistral() {
    use candle_transformers::models::mistral::{Config, Model};
    const WINDOW: usize = 6;
    let dir = temp_dir("hf-mistral");
    let extra =
        json!({"model_type": "mistral", "sliding_window": WINDOW, "head_dim": TINY.head_dim()});
    write_hf_dir_with(
        &dir,
        TINY,
        "MistralForCausalLM",
        DType::F32,
        &random_tensors(TINY, 19, false),
        &extra,
    );
    let ours = f32_kv_logits(&dir, &REFERENCE_PROMPT);
    let text = std::fs::read_to_string(dir.join("config.json")).expect("config");
    let mut config: Config = serde_json::from_str(&text).expect("mistral config");
    config.sliding_window = Some(WINDOW - 1);
    let mut model = Model::new(&config, weights(&dir)).expect("candle mistral");
    let theirs: Vec<f32> = model
        .forward(&input(&REFERENCE_PROMPT), 0)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("candle forward");
    compare("mistral", &ours, &theirs);
    // The window is really applied: without it candle gives other logits.
    config.sliding_window = None;
    let mut full = Model::new(&config, weights(&dir)).expect("candle mistral");
    let unwindowed: Vec<f32> = full
        .forward(&input(&REFERENCE_PROMPT), 0)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("candle forward");
    assert!(
        max_abs_diff(&ours, &unwindowed) > 1e-2,
        "the window changed nothing"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Phi-3: Llama with Q|K|V and gate|up each one fused matrix.
#[test]
fn hf_phi3_matches_candle_phi3() {
    use candle_transformers::models::phi3::{Config, Model};
    let dir = temp_dir("hf-phi3");
    let separate = random_tensors(TINY, 31, false);
    let get = |name: &str| {
        separate
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, dims, v)| (dims.clone(), v.clone()))
            .expect("tensor")
    };
    let mut tensors = Vec::new();
    for (name, dims, values) in &separate {
        let fused_away = ["attn_q.", "attn_k.", "attn_v.", "ffn_gate.", "ffn_up."];
        if !fused_away.iter().any(|f| name.contains(f)) {
            tensors.push((name.clone(), dims.clone(), values.clone()));
        }
    }
    for l in 0..TINY.layers {
        let stack = |parts: &[&str]| {
            let mut rows = 0;
            let mut values = Vec::new();
            for p in parts {
                let (dims, v) = get(&format!("blk.{l}.{p}.weight"));
                rows += dims[0];
                values.extend(v);
            }
            (vec![rows, TINY.hidden], values)
        };
        let (dims, v) = stack(&["attn_q", "attn_k", "attn_v"]);
        tensors.push((format!("blk.{l}.attn_qkv.weight"), dims, v));
        let (dims, v) = stack(&["ffn_gate", "ffn_up"]);
        tensors.push((format!("blk.{l}.ffn_gate_up.weight"), dims, v));
    }
    write_hf_dir_with(
        &dir,
        TINY,
        "Phi3ForCausalLM",
        DType::F32,
        &tensors,
        &json!({"model_type": "phi3", "sliding_window": null}),
    );
    let ours = f32_kv_logits(&dir, &REFERENCE_PROMPT);
    let text = std::fs::read_to_string(dir.join("config.json")).expect("config");
    let config: Config = serde_json::from_str(&text).expect("phi3 config");
    let mut model = Model::new(&config, weights(&dir)).expect("candle phi3");
    let theirs: Vec<f32> = model
        .forward(&input(&REFERENCE_PROMPT), 0)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("candle forward");
    compare("phi3", &ours, &theirs);
    // The same weights as llama.cpp writes a Phi-3 GGUF (`phi3`, the fused
    // gate|up under `ffn_up`) give the same logits.
    let gguf: Vec<_> = tensors
        .iter()
        .map(|(name, dims, v)| {
            (
                name.replace("ffn_gate_up", "ffn_up"),
                dims.clone(),
                v.clone(),
            )
        })
        .collect();
    let path = dir.join("phi3.gguf");
    write_gguf(&path, TINY, "phi3", GgmlDType::F32, &gguf, &[]);
    compare("phi3 gguf", &f32_kv_logits(&path, &REFERENCE_PROMPT), &ours);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A GGUF Mixtral says `llama` but has experts: refused naming them.
#[test]
fn gguf_mixture_of_experts_is_refused() {
    let dir = temp_dir("gguf-moe");
    let path = dir.join("moe.gguf");
    write_gguf_meta(
        &path,
        TINY,
        "llama",
        GgmlDType::F32,
        &random_tensors(TINY, 23, false),
        &[
            ("llama.expert_count", Value::U32(8)),
            ("llama.expert_used_count", Value::U32(2)),
        ],
    );
    let err =
        tessera_model::loader::read_config(&tessera_model::loader::ModelSource::Gguf(path.clone()))
            .expect_err("a MoE is refused");
    let message = err.to_string();
    assert!(
        message.contains("mixture of experts") && message.contains("8"),
        "{message}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// candle qwen2's final-normed hidden states of `prompt`, `[tokens, hidden]`.
fn candle_qwen2_hidden(dir: &std::path::Path, prompt: &[u32]) -> Vec<Vec<f32>> {
    use candle_transformers::models::qwen2::{Config, Model};
    let text = std::fs::read_to_string(dir.join("config.json")).expect("config");
    let config: Config = serde_json::from_str(&text).expect("qwen2 config");
    let mut model = Model::new(&config, weights(dir)).expect("candle qwen2");
    model
        .forward(&input(prompt), 0, None)
        .and_then(|t| t.squeeze(0))
        .and_then(|t| t.to_vec2())
        .expect("candle forward")
}

fn unit(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

/// A decoder with sentence-transformers pooling (as Qwen3-Embedding ships)
/// is an embedder: last-token and mean pooling of the final hidden states,
/// normalized, against candle's Qwen2 hidden states; a sequence's vector is
/// the same to the bit alone or batched.
#[test]
fn hf_decoder_embedder_pools_candle_hidden_states() {
    use tessera_model::encoder::{decoder_embedding_head, Pooling};
    let dir = temp_dir("hf-qwen2-embedder");
    write_hf_dir(
        &dir,
        TINY,
        "Qwen2ForCausalLM",
        DType::F32,
        &random_tensors(TINY, 29, true),
    );
    let modules = json!([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
    ]);
    std::fs::write(dir.join("modules.json"), modules.to_string()).expect("modules.json");
    std::fs::create_dir_all(dir.join("1_Pooling")).expect("mkdir");
    let short = &REFERENCE_PROMPT[3..12];
    let hidden_long = candle_qwen2_hidden(&dir, &REFERENCE_PROMPT);
    let hidden_short = candle_qwen2_hidden(&dir, short);
    let mean = |rows: &[Vec<f32>]| -> Vec<f32> {
        (0..rows[0].len())
            .map(|i| rows.iter().map(|r| r[i]).sum::<f32>() / rows.len() as f32)
            .collect()
    };
    for (mode, pooling) in [
        ("pooling_mode_lasttoken", Pooling::LastToken),
        ("pooling_mode_mean_tokens", Pooling::Mean),
    ] {
        let config = json!({"word_embedding_dimension": TINY.hidden, mode: true});
        std::fs::write(dir.join("1_Pooling/config.json"), config.to_string()).expect("pooling");
        let (head, matryoshka) = decoder_embedding_head(&dir)
            .expect("reads")
            .expect("a head");
        assert_eq!(
            (head.pooling, head.normalize, matryoshka),
            (pooling, true, false)
        );
        let mut runner = cpu_runner_with(&dir, 16, KvCacheDtype::F32).with_embedding(head);
        let both = runner
            .execute(&batch(vec![
                (REFERENCE_PROMPT.to_vec(), 0, (0..2).collect(), true),
                (short.to_vec(), 0, (2..4).collect(), true),
            ]))
            .expect("forward");
        let alone = runner
            .execute(&batch(vec![(short.to_vec(), 0, (4..6).collect(), true)]))
            .expect("forward");
        assert_eq!(both.vocab_size, TINY.hidden);
        assert_eq!(
            both.row(1),
            alone.row(0),
            "{mode}: batched differs from alone"
        );
        let expected = match pooling {
            Pooling::LastToken => [
                hidden_long.last().expect("rows").clone(),
                hidden_short.last().expect("rows").clone(),
            ],
            _ => [mean(&hidden_long), mean(&hidden_short)],
        };
        for (row, want) in [both.row(0), both.row(1)].into_iter().zip(expected) {
            let diff = max_abs_diff(row, &unit(want));
            eprintln!("{mode}: max |tessera - candle| = {diff:.2e} (unit vectors)");
            assert!(diff < 1e-5, "{mode}: {diff}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
