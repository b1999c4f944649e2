//! The pre-tokenizer regexes split text the way the reference tokenizers do
//! (expected pieces from Hugging Face's Llama 3, Qwen2 and StarCoder/SmolLM2
//! tokenizers, whose tokenizer.json carry these same regexes).

use tokenizers::{
    OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, PreTokenizerWrapper,
};

use super::*;

fn pieces(pre: &str, text: &str) -> Vec<String> {
    let (regexes, _) = pre_tokenizer_regexes(pre).expect("known pre-tokenizer");
    let json = json!({"type": "Sequence", "pretokenizers": regex_splits(&regexes)});
    let pt: PreTokenizerWrapper = serde_json::from_value(json).expect("valid pre-tokenizer");
    let mut s = PreTokenizedString::from(text);
    pt.pre_tokenize(&mut s).expect("pre-tokenizes");
    s.get_splits(OffsetReferential::Original, OffsetType::Byte)
        .into_iter()
        .map(|(piece, _, _)| piece.to_string())
        .collect()
}

#[test]
fn llama3_groups_digits_by_three_and_keeps_case_insensitive_contractions() {
    assert_eq!(
        pieces("llama-bpe", "Hello world 1234567 I'M here!!\n\n  x"),
        ["Hello", " world", " ", "123", "456", "7", " I", "'M", " here", "!!\n\n", " ", " x"]
    );
}

#[test]
fn qwen2_splits_every_digit() {
    assert_eq!(
        pieces("qwen2", "ab 123 it's"),
        ["ab", " ", "1", "2", "3", " it", "'s"]
    );
}

#[test]
fn smollm_isolates_digits_then_splits_like_gpt2() {
    assert_eq!(
        pieces("smollm", "x 42 yes!  ok"),
        ["x", " ", "4", "2", " yes", "!", " ", " ok"]
    );
}

#[test]
fn default_splits_punctuation_runs_first() {
    assert_eq!(
        pieces("default", "a, b 1234"),
        ["a", ",", " b", " ", "123", "4"]
    );
}

#[test]
fn unknown_pre_tokenizer_is_rejected_by_name() {
    let mut md = HashMap::new();
    md.insert(
        "tokenizer.ggml.model".to_string(),
        Value::String("gpt2".into()),
    );
    md.insert(
        "tokenizer.ggml.pre".to_string(),
        Value::String("no-such-pre".into()),
    );
    md.insert(
        "tokenizer.ggml.tokens".to_string(),
        Value::Array(vec![Value::String("a".into())]),
    );
    md.insert("tokenizer.ggml.merges".to_string(), Value::Array(vec![]));
    let err = build(&md).err().expect("rejected");
    assert!(err.contains("no-such-pre"), "{err}");
}

/// A SentencePiece vocabulary: merges follow piece scores, unknown characters
/// fall back to bytes, and decoding undoes the space marker.
#[test]
fn sentencepiece_merges_by_score_with_byte_fallback() {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![TYPE_UNKNOWN, TYPE_CONTROL, TYPE_CONTROL];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let normal = [
        "▁", "h", "e", "l", "o", "w", "r", "d", "he", "ll", "llo", "▁he", "▁hello", "▁w", "or",
        "▁wor", "▁world", "ld",
    ];
    let first_normal = tokens.len();
    for t in normal {
        tokens.push(t.into());
        types.push(TYPE_NORMAL);
    }
    // Longer pieces score higher, so whole words win.
    let scores: Vec<f32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if i >= first_normal {
                t.chars().count() as f32
            } else {
                0.0
            }
        })
        .collect();
    let mut md = HashMap::new();
    md.insert(
        "tokenizer.ggml.model".to_string(),
        Value::String("llama".into()),
    );
    md.insert(
        "tokenizer.ggml.tokens".to_string(),
        Value::Array(tokens.iter().map(|t| Value::String(t.clone())).collect()),
    );
    md.insert(
        "tokenizer.ggml.token_type".to_string(),
        Value::Array(types.iter().map(|&t| Value::I32(t)).collect()),
    );
    md.insert(
        "tokenizer.ggml.scores".to_string(),
        Value::Array(scores.iter().map(|&s| Value::F32(s)).collect()),
    );
    md.insert("tokenizer.ggml.bos_token_id".to_string(), Value::U32(1));
    md.insert("tokenizer.ggml.eos_token_id".to_string(), Value::U32(2));
    md.insert("tokenizer.ggml.unknown_token_id".to_string(), Value::U32(0));
    let built = build(&md).expect("builds");
    let tok = tokenizers::Tokenizer::from_bytes(built.json.to_string().as_bytes()).expect("loads");
    let id = |t: &str| tokens.iter().position(|x| x == t).expect("token") as u32;
    let enc = tok.encode_fast("hello world!", true).expect("encodes");
    // BOS added by default for SentencePiece; "!" is not a piece: byte 0x21.
    assert_eq!(enc.get_ids(), [1, id("▁hello"), id("▁world"), id("<0x21>")]);
    assert_eq!(
        tok.decode(enc.get_ids(), true).expect("decodes"),
        "hello world!"
    );
    assert_eq!(built.eos_token_ids, [2]);
}
