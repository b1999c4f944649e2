//! A tiny random Llama written as a Hugging Face directory (config.json,
//! word-level tokenizer.json, model.safetensors): a second model the tests
//! can tell apart from the default one, cheap enough to load many times.

use std::path::Path;

use serde_json::json;

/// Words of the tiny vocabulary (after `[UNK]` and `</s>`).
const WORDS: &[&str] = &[
    "the", "a", "cat", "dog", "sat", "on", "mat", "ran", "to", "house", "red", "blue", "big",
    "small", "and", "or", "is", "was", "hello", "world", "one", "two", "three", "four", "five",
    "six", "seven", "eight", "nine", "ten", "yes", "no", "up", "down", "left", "right", "in",
    "out", "over", "under", "fast", "slow", "hot", "cold", "sun", "moon", "star", "sky", "sea",
    "tree", "leaf", "rock", "sand", "rain", "snow", "wind", "fire", "ice", "bird", "fish", "frog",
    "bee",
];

const HIDDEN: usize = 64;
const INTERMEDIATE: usize = 128;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;

/// Writes the model into `dir`; `seed` picks its weights.
pub fn write(dir: &Path, seed: u64) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let vocab = WORDS.len() + 2;
    let mut words = serde_json::Map::new();
    words.insert("[UNK]".into(), json!(0));
    words.insert("</s>".into(), json!(1));
    for (i, w) in WORDS.iter().enumerate() {
        words.insert((*w).into(), json!(i + 2));
    }
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [
            {"id": 0, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 1, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": words, "unk_token": "[UNK]"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).expect("tokenizer.json");
    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "vocab_size": vocab,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 512,
        "tie_word_embeddings": false,
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 1,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config.json");

    let head_dim = HIDDEN / HEADS;
    let (q, kv) = (HEADS * head_dim, KV_HEADS * head_dim);
    let mut tensors: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![vocab, HIDDEN]),
        ("model.norm.weight".into(), vec![HIDDEN]),
        ("lm_head.weight".into(), vec![vocab, HIDDEN]),
    ];
    for l in 0..LAYERS {
        let p = |n: &str| format!("model.layers.{l}.{n}");
        tensors.extend([
            (p("input_layernorm.weight"), vec![HIDDEN]),
            (p("post_attention_layernorm.weight"), vec![HIDDEN]),
            (p("self_attn.q_proj.weight"), vec![q, HIDDEN]),
            (p("self_attn.k_proj.weight"), vec![kv, HIDDEN]),
            (p("self_attn.v_proj.weight"), vec![kv, HIDDEN]),
            (p("self_attn.o_proj.weight"), vec![HIDDEN, q]),
            (p("mlp.gate_proj.weight"), vec![INTERMEDIATE, HIDDEN]),
            (p("mlp.up_proj.weight"), vec![INTERMEDIATE, HIDDEN]),
            (p("mlp.down_proj.weight"), vec![HIDDEN, INTERMEDIATE]),
        ]);
    }
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let norm = name.ends_with("norm.weight");
            let bytes = (0..n)
                .flat_map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let r = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                    let v = if norm { 1.0 } else { r * 0.5 };
                    v.to_le_bytes()
                })
                .collect();
            (name, shape, bytes)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(name, shape, bytes)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .expect("view");
            (name.clone(), view)
        })
        .collect();
    safetensors::tensor::serialize_to_file(views, None, &dir.join("model.safetensors"))
        .expect("model.safetensors");
}
