//! Workloads: seeded reproducibility, exact random lengths, the JSONL and
//! ShareGPT readers. The tokenizer is a tiny word-level tokenizer.json made
//! here (the real model's BPE tokenizer is exercised end to end by the
//! `tessera bench` smoke test over a tessera server).

use std::path::Path;

use serde_json::{json, Map, Value};
use tessera_bench::tokenizer::Tokenizer;
use tessera_bench::workload::{build, length_range, Dataset, RandomSpec, WorkItem, WORDS};

/// A word-level tokenizer over the random prompts' words (plus a few for the
/// file tests): one token per word.
fn word_tokenizer(dir: &Path) -> Tokenizer {
    let mut vocab = Map::new();
    vocab.insert("[UNK]".into(), 0.into());
    for w in WORDS
        .iter()
        .chain(&["hello", "world", "a", "b", "c", "d", "e"])
    {
        let id = vocab.len();
        vocab.entry(w.to_string()).or_insert(Value::from(id));
    }
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, tokenizer.to_string()).expect("write tokenizer");
    Tokenizer::from_file(&path).expect("tokenizer loads")
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn random(input_len: usize, output_len: usize, range_ratio: f64, prefix_len: usize) -> Dataset {
    Dataset::Random(RandomSpec {
        input_len,
        output_len,
        range_ratio,
        prefix_len,
    })
}

#[test]
fn random_prompts_have_exact_lengths_and_follow_the_seed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tok = word_tokenizer(dir.path());
    let a = block_on(build(&random(32, 16, 0.0, 0), &tok, 20, 7)).expect("builds");
    assert_eq!(a.items.len(), 20);
    assert!(a.notes.is_empty(), "{:?}", a.notes);
    for item in &a.items {
        assert_eq!((item.prompt_len, item.output_len), (32, 16));
        let ids = block_on(tok.encode(&item.prompt)).expect("encodes");
        assert_eq!(ids.len(), 32, "re-tokenized: {:?}", item.prompt);
        assert!(!ids.contains(&0), "no unknown words");
    }
    let again = block_on(build(&random(32, 16, 0.0, 0), &tok, 20, 7)).expect("builds");
    assert_eq!(a.items, again.items, "same seed, same requests");
    let other = block_on(build(&random(32, 16, 0.0, 0), &tok, 20, 8)).expect("builds");
    assert_ne!(a.items, other.items, "another seed, other prompts");
    let distinct: std::collections::HashSet<&str> =
        a.items.iter().map(|i| i.prompt.as_str()).collect();
    assert_eq!(
        distinct.len(),
        20,
        "no two prompts alike (no accidental prefix-cache hits)"
    );
}

#[test]
fn range_ratio_and_prefix_shape_the_lengths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tok = word_tokenizer(dir.path());
    let w = block_on(build(&random(40, 20, 0.5, 8), &tok, 200, 1)).expect("builds");
    let (in_lo, in_hi) = length_range(40, 0.5);
    let (out_lo, out_hi) = length_range(20, 0.5);
    let prefix: Vec<&str> = w.items[0].prompt.split(' ').take(8).collect();
    for item in &w.items {
        assert!(
            (8 + in_lo..=8 + in_hi).contains(&item.prompt_len),
            "{}",
            item.prompt_len
        );
        assert!((out_lo..=out_hi).contains(&item.output_len));
        assert_eq!(
            block_on(tok.encode(&item.prompt)).expect("encodes").len(),
            item.prompt_len
        );
        let start: Vec<&str> = item.prompt.split(' ').take(8).collect();
        assert_eq!(start, prefix, "every prompt starts with the shared prefix");
    }
    // Uniform over the range: both ends occur in 200 draws.
    let lens: Vec<usize> = w.items.iter().map(|i| i.prompt_len - 8).collect();
    assert!(lens.contains(&in_lo) && lens.contains(&in_hi), "{lens:?}");
    assert!(
        block_on(build(&random(40, 20, 1.0, 0), &tok, 1, 1)).is_err(),
        "ratio must be < 1"
    );
}

#[test]
fn jsonl_prompts_are_read_sampled_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tok = word_tokenizer(dir.path());
    let path = dir.path().join("p.jsonl");
    std::fs::write(
        &path,
        "{\"prompt\": \"hello world\", \"output_len\": 3}\n\n{\"prompt\": \"a b c\", \"id\": 1}\n",
    )
    .expect("write");
    let dataset = Dataset::Jsonl {
        path: path.clone(),
        output_len: 9,
        no_shuffle: true,
    };
    let w = block_on(build(&dataset, &tok, 3, 0)).expect("builds");
    let item = |p: &str, prompt_len, output_len| WorkItem {
        prompt: p.into(),
        prompt_len,
        output_len,
    };
    assert_eq!(
        w.items,
        [
            item("hello world", 2, 3),
            item("a b c", 3, 9),
            item("hello world", 2, 3)
        ]
    );
    assert!(w.notes[0].contains("repeat"), "{:?}", w.notes);

    std::fs::write(&path, "{\"prompt\": \"a\"}\n{\"text\": \"b\"}\n").expect("write");
    let err = block_on(build(&dataset, &tok, 1, 0)).expect_err("line 2 has no prompt");
    assert!(err.to_string().contains("p.jsonl:2:"), "{err}");
    std::fs::write(&path, "{\"prompt\": \"a\", \"output_len\": 0}\n").expect("write");
    assert!(
        block_on(build(&dataset, &tok, 1, 0)).is_err(),
        "output_len 0"
    );
}

#[test]
fn sharegpt_takes_first_turns_and_drops_what_vllm_drops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tok = word_tokenizer(dir.path());
    let path = dir.path().join("sg.json");
    let turn = |v: &str| json!({"from": "x", "value": v});
    let conversations = json!([
        {"id": "1", "conversations": [turn("a b c d e"), turn("hello world a b c"), turn("ignored")]},
        {"id": "2", "conversations": [turn("a b"), turn("a b c d e")]},        // prompt < 4
        {"id": "3", "conversations": [turn("a b c d")]},                       // one turn
        {"id": "4", "conversations": [turn("a b c d e"), turn("a")]},         // reply < 4
    ]);
    std::fs::write(&path, conversations.to_string()).expect("write");
    let dataset = Dataset::ShareGpt {
        path: path.clone(),
        output_len: None,
        no_shuffle: false,
    };
    let w = block_on(build(&dataset, &tok, 2, 3)).expect("builds");
    assert_eq!(w.items.len(), 2);
    for item in &w.items {
        assert_eq!(
            (item.prompt.as_str(), item.prompt_len, item.output_len),
            ("a b c d e", 5, 5)
        );
    }
    // A fixed output length keeps replies of any length (vLLM's rule).
    let fixed = Dataset::ShareGpt {
        path: path.clone(),
        output_len: Some(7),
        no_shuffle: true,
    };
    let w = block_on(build(&fixed, &tok, 2, 3)).expect("builds");
    assert_eq!(
        w.items.iter().map(|i| i.output_len).collect::<Vec<_>>(),
        [7, 7]
    );
    assert_eq!(
        w.items[1].prompt, "a b c d e",
        "conversation 4 counts now; 2 is still too short"
    );

    std::fs::write(&path, "{\"not\": \"a list\"}").expect("write");
    assert!(block_on(build(&dataset, &tok, 1, 0)).is_err());
}
