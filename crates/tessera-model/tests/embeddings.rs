//! all-MiniLM-L6-v2 against reference vectors from an independent NumPy BERT
//! (scripts/embedding-reference, float64, Hugging Face `tokenizers` for the
//! ids): same token ids, cosine similarity at least 0.9999 per sentence, and a
//! sentence's vector the same to the bit alone or in a batch.

mod common;

use std::path::PathBuf;

use tessera_engine::{Batch, Runner, SequenceChunk};
use tessera_model::encoder::{is_encoder_dir, BertModel, EncoderRunner, Pooling};
use tessera_model::tokenizer::Tokenizer;

fn model_dir() -> PathBuf {
    let dir = common::repo_root().join("models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run scripts/fetch-model",
        dir.display()
    );
    dir
}

struct Case {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f64>,
}

fn cases() -> Vec<Case> {
    let path = common::repo_root().join("tests/fixtures/minilm-embeddings.json");
    let text = std::fs::read_to_string(&path).expect("fixture");
    let json: serde_json::Value = serde_json::from_str(&text).expect("fixture JSON");
    json["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().expect("text").to_string(),
            ids: c["token_ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|v| v.as_u64().expect("id") as u32)
                .collect(),
            embedding: c["embedding"]
                .as_array()
                .expect("embedding")
                .iter()
                .map(|v| v.as_f64().expect("value"))
                .collect(),
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, y)| f64::from(x) * y).sum();
    let na: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn configuration_comes_from_the_sentence_transformers_files() {
    let dir = model_dir();
    assert!(is_encoder_dir(&dir));
    assert!(!is_encoder_dir(&common::repo_root().join("models")));
    let model = BertModel::load(&dir).expect("loads");
    let c = &model.config;
    assert_eq!(c.pooling, Pooling::Mean);
    assert!(c.normalize);
    assert!(!c.matryoshka);
    assert_eq!((c.trained_context_len, c.max_model_len), (512, 256));
    assert_eq!((c.hidden_size, c.num_layers, c.num_heads), (384, 6, 12));
}

#[test]
fn token_ids_match_the_reference_tokenizer() {
    let tokenizer = Tokenizer::from_hf_dir(&model_dir()).expect("tokenizer");
    for case in cases() {
        let ids = tokenizer.encode(&case.text, true).expect("encodes");
        assert_eq!(ids, case.ids, "{:?}", case.text);
    }
}

#[test]
fn vectors_match_the_reference_and_batching_changes_no_bit() {
    let model = BertModel::load(&model_dir()).expect("loads");
    let cases = cases();
    let h = model.config.hidden_size;
    let inputs: Vec<&[u32]> = cases.iter().map(|c| c.ids.as_slice()).collect();
    let batched = model.embed(&inputs).expect("batch");
    assert_eq!(batched.len(), cases.len() * h);
    for (i, case) in cases.iter().enumerate() {
        let alone = model.embed(&[case.ids.as_slice()]).expect("alone");
        let row = &batched[i * h..(i + 1) * h];
        assert_eq!(
            alone.as_slice(),
            row,
            "{:?}: batched differs from alone",
            case.text
        );
        let cos = cosine(row, &case.embedding);
        assert!(cos >= 0.9999, "{:?}: cosine {cos}", case.text);
        let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "normalized: {norm}");
    }
}

#[test]
fn the_runner_returns_one_vector_per_sequence_and_refuses_chunks() {
    let model = BertModel::load(&model_dir()).expect("loads");
    let cases = cases();
    let expected = model.embed(&[cases[0].ids.as_slice()]).expect("alone");
    let mut runner = EncoderRunner::new(model, 512, 8);
    let chunk = |ids: &[u32], start: usize| SequenceChunk {
        token_ids: ids.to_vec(),
        start_position: start,
        block_table: vec![0],
        wants_logits: true,
    };
    let logits = runner
        .execute(&Batch {
            chunks: vec![chunk(&cases[0].ids, 0), chunk(&cases[1].ids, 0)],
        })
        .expect("runs");
    assert_eq!((logits.rows(), logits.vocab_size), (2, 384));
    assert_eq!(logits.row(0), expected.as_slice());
    let err = runner
        .execute(&Batch {
            chunks: vec![chunk(&cases[0].ids[2..], 2)],
        })
        .expect_err("a chunk past position 0 is refused");
    assert!(err.to_string().contains("whole inputs"), "{err}");
    assert_eq!(runner.max_model_len(), 256);
}
