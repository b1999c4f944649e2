//! The tokenizer rebuilt from the default model's GGUF metadata gives llama.cpp's
//! token ids on every fixture case, decodes them back to the text, and parses
//! special tokens written in the prompt.

mod common;

use tessera_model::gguf::GgufFile;
use tessera_model::tokenizer::Tokenizer;

fn default_tokenizer() -> Tokenizer {
    let path = common::default_model();
    let file = GgufFile::open(&path).expect("GGUF opens");
    Tokenizer::from_gguf(&path, file.metadata()).expect("tokenizer builds")
}

#[test]
fn ids_match_llama_cpp_on_every_fixture_case() {
    let tokenizer = default_tokenizer();
    let cases = common::fixture_lines("smollm2-tokenizer.jsonl");
    assert!(cases.len() >= 10, "fixture has {} cases", cases.len());
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let want: Vec<u32> = case["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_u64().expect("id") as u32)
            .collect();
        let got = tokenizer.encode(text, true).expect("encodes");
        assert_eq!(got, want, "token ids of {text:?}");
        let back = tokenizer.decode(&got, false).expect("decodes");
        assert_eq!(back, text, "decode(encode(text)) of {text:?}");
    }
}

#[test]
fn special_tokens_parse_and_can_be_skipped_when_decoding() {
    let tokenizer = default_tokenizer();
    let im_start = tokenizer
        .token_to_id("<|im_start|>")
        .expect("<|im_start|> in vocab");
    let im_end = tokenizer
        .token_to_id("<|im_end|>")
        .expect("<|im_end|> in vocab");
    let ids = tokenizer
        .encode("<|im_start|>user\nhi<|im_end|>", false)
        .expect("encodes");
    assert_eq!(ids.first(), Some(&im_start));
    assert_eq!(ids.last(), Some(&im_end));
    assert_eq!(tokenizer.decode(&ids, true).expect("decodes"), "user\nhi");
    assert!(
        tokenizer.eos_token_ids().contains(&im_end),
        "{:?}",
        tokenizer.eos_token_ids()
    );
}

#[test]
fn out_of_vocabulary_ids_are_an_error_not_a_panic() {
    let tokenizer = default_tokenizer();
    let size = tokenizer.vocab_size() as u32;
    assert!(tokenizer.decode(&[size + 7], false).is_err());
}

/// Streaming the fixture ids one token at a time gives back each text exactly,
/// multi-byte emoji and CJK included, with no chunk holding a broken character.
#[test]
fn incremental_detokenization_reproduces_every_fixture_text() {
    use tessera_engine::IncrementalDetokenizer;
    let tokenizer = default_tokenizer();
    for case in common::fixture_lines("smollm2-tokenizer.jsonl") {
        let text = case["text"].as_str().expect("text");
        let ids = tokenizer.encode(text, false).expect("encodes");
        let mut detok = IncrementalDetokenizer::new(&[], false);
        let mut chunks = Vec::new();
        for &id in &ids {
            chunks.push(detok.push(&tokenizer, id).expect("decodes"));
        }
        chunks.push(detok.flush(&tokenizer).expect("flushes"));
        assert!(
            chunks
                .iter()
                .all(|c| !c.contains(char::REPLACEMENT_CHARACTER)),
            "{chunks:?}"
        );
        assert_eq!(chunks.concat(), text);
    }
}
