//! Rebuilds a `tokenizers` tokenizer.json from GGUF `tokenizer.ggml.*` metadata,
//! matching llama.cpp's tokenizer: byte-level BPE with the pre-tokenizer regexes
//! llama.cpp uses for each `tokenizer.ggml.pre`, or SentencePiece-style BPE with
//! merges ranked by piece score and byte fallback.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use serde_json::{json, Value as Json};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TYPE_NORMAL: i32 = 1;
const TYPE_UNKNOWN: i32 = 2;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

/// GPT-2's split, shared by many pre-tokenizers.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The regexes llama.cpp applies in turn for a `tokenizer.ggml.pre` value, and
/// whether a word found whole in the vocabulary skips the merges (Llama 3).
fn pre_tokenizer_regexes(pre: &str) -> Option<(Vec<&'static str>, bool)> {
    Some(match pre {
        "default" => (
            vec![r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
            false,
        ),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" => (vec![LLAMA3], true),
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez" => (vec![QWEN2], false),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            (vec![r"\p{N}", GPT2], false)
        }
        "gpt-2" | "phi-2" | "roberta-bpe" => (vec![GPT2], false),
        _ => return None,
    })
}

const SUPPORTED_PRE: &str = "default, llama-bpe (llama3), qwen2, smollm, starcoder, gpt-2, \
     phi-2, refact, command-r, stablelm2, falcon3, exaone";

/// A tokenizer.json and the special-token facts that live outside it.
pub(super) struct Built {
    pub json: Json,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

/// Builds the tokenizer.json; errors say which key is missing or wrong.
pub(super) fn build(md: &HashMap<String, Value>) -> Result<Built, String> {
    let model = string(md, "tokenizer.ggml.model")?.ok_or("no tokenizer.ggml.model")?;
    let tokens = string_array(md, "tokenizer.ggml.tokens")?.ok_or("no tokenizer.ggml.tokens")?;
    let types = match md.get("tokenizer.ggml.token_type") {
        Some(Value::Array(items)) => items.iter().map(|v| int(v).unwrap_or(1) as i32).collect(),
        _ => vec![TYPE_NORMAL; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(format!(
            "tokenizer.ggml.token_type has {} entries for {} tokens",
            types.len(),
            tokens.len()
        ));
    }
    let id = |key: &str| -> Option<u32> {
        md.get(key)
            .and_then(int)
            .and_then(|v| u32::try_from(v).ok())
            .filter(|&v| (v as usize) < tokens.len())
    };
    let bos = id("tokenizer.ggml.bos_token_id");
    let flag = |key: &str| matches!(md.get(key), Some(Value::Bool(true)));
    let flag_or = |key: &str, default: bool| match md.get(key) {
        Some(Value::Bool(b)) => *b,
        _ => default,
    };

    let (model_json, pre_tokenizer, decoder, add_bos_default) = match model {
        "gpt2" => {
            let pre = string(md, "tokenizer.ggml.pre")?.unwrap_or("default");
            let (regexes, ignore_merges) = pre_tokenizer_regexes(pre).ok_or_else(|| {
                format!("unsupported pre-tokenizer tokenizer.ggml.pre = '{pre}' (supported: {SUPPORTED_PRE})")
            })?;
            let merges = string_array(md, "tokenizer.ggml.merges")?
                .ok_or("byte-level BPE without tokenizer.ggml.merges")?;
            (
                byte_level_bpe(&tokens, &merges, ignore_merges),
                byte_level_pre_tokenizer(&regexes),
                json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}),
                false,
            )
        }
        "llama" => {
            let scores = match md.get("tokenizer.ggml.scores") {
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| match v {
                        Value::F32(x) => Ok(*x),
                        _ => Err("tokenizer.ggml.scores holds a non-f32 value".to_string()),
                    })
                    .collect::<Result<Vec<f32>, String>>()?,
                _ => return Err("SentencePiece tokenizer without tokenizer.ggml.scores".into()),
            };
            if scores.len() != tokens.len() {
                return Err("tokenizer.ggml.scores and tokens differ in length".into());
            }
            let unk = id("tokenizer.ggml.unknown_token_id");
            let add_space = flag_or("tokenizer.ggml.add_space_prefix", true);
            let scheme = if add_space { "first" } else { "never" };
            (
                sentencepiece_bpe(&tokens, &types, &scores, unk),
                json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": scheme, "split": false}),
                sentencepiece_decoder(add_space),
                true,
            )
        }
        other => {
            return Err(format!(
                "unsupported tokenizer.ggml.model '{other}' (supported: gpt2 byte-level BPE, llama SentencePiece)"
            ))
        }
    };

    let add_bos = flag_or("tokenizer.ggml.add_bos_token", add_bos_default) && bos.is_some();
    let add_eos = flag("tokenizer.ggml.add_eos_token");
    let eos = id("tokenizer.ggml.eos_token_id");
    let mut eos_token_ids: Vec<u32> = ["eos", "eot", "eom"]
        .iter()
        .filter_map(|k| id(&format!("tokenizer.ggml.{k}_token_id")))
        .collect();
    eos_token_ids.sort_unstable();
    eos_token_ids.dedup();

    let json = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens(&tokens, &types),
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor(&tokens, if add_bos { bos } else { None }, if add_eos { eos } else { None }),
        "decoder": decoder,
        "model": model_json,
    });
    Ok(Built {
        json,
        bos_token_id: bos,
        eos_token_ids,
    })
}

fn byte_level_bpe(tokens: &[&str], merges: &[&str], ignore_merges: bool) -> Json {
    let vocab: serde_json::Map<String, Json> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), json!(i)))
        .collect();
    json!({
        "type": "BPE",
        "dropout": null,
        "unk_token": null,
        "continuing_subword_prefix": null,
        "end_of_word_suffix": null,
        "fuse_unk": false,
        "byte_fallback": false,
        "ignore_merges": ignore_merges,
        "vocab": vocab,
        "merges": merges,
    })
}

/// Each regex splits every piece left by the ones before it, keeping matches and
/// the text between them as pieces (llama.cpp's `unicode_regex_split`); then bytes
/// map to GPT-2's printable alphabet.
fn byte_level_pre_tokenizer(regexes: &[&str]) -> Json {
    let mut steps = regex_splits(regexes);
    steps.push(json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}));
    json!({"type": "Sequence", "pretokenizers": steps})
}

/// Marker to space, bytes to characters, and the prefix space dropped again.
fn sentencepiece_decoder(add_space_prefix: bool) -> Json {
    let mut steps = vec![
        json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if add_space_prefix {
        steps.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    json!({"type": "Sequence", "decoders": steps})
}

fn regex_splits(regexes: &[&str]) -> Vec<Json> {
    regexes
        .iter()
        .map(|r| json!({"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": false}))
        .collect()
}

/// SentencePiece BPE as a ranked-merge BPE: joining two pieces into a vocabulary
/// piece ranks by that piece's score, which is the order SentencePiece (and
/// llama.cpp) merges in; characters outside the vocabulary fall back to bytes.
fn sentencepiece_bpe(tokens: &[&str], types: &[i32], scores: &[f32], unk: Option<u32>) -> Json {
    let index: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let mut merges: Vec<(f32, usize, &str, &str)> = Vec::new();
    for (id, token) in tokens.iter().enumerate() {
        if types[id] != TYPE_NORMAL && types[id] != TYPE_USER_DEFINED {
            continue;
        }
        for (split, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(split);
            if index.contains_key(left) && index.contains_key(right) {
                merges.push((scores[id], id, left, right));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let merges: Vec<Json> = merges.iter().map(|(_, _, l, r)| json!([l, r])).collect();
    let vocab: serde_json::Map<String, Json> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), json!(i)))
        .collect();
    json!({
        "type": "BPE",
        "dropout": null,
        "unk_token": unk.map(|u| tokens[u as usize]),
        "continuing_subword_prefix": null,
        "end_of_word_suffix": null,
        "fuse_unk": true,
        "byte_fallback": true,
        "ignore_merges": false,
        "vocab": vocab,
        "merges": merges,
    })
}

/// Control, unknown and user-defined tokens are matched whole in the text, as
/// llama.cpp does when parsing special tokens; all but user-defined ones are
/// skipped when decoding with `skip_special_tokens`.
fn added_tokens(tokens: &[&str], types: &[i32]) -> Vec<Json> {
    tokens
        .iter()
        .zip(types)
        .enumerate()
        .filter(|(_, (_, &t))| matches!(t, TYPE_UNKNOWN | TYPE_CONTROL | TYPE_USER_DEFINED))
        .filter(|(_, (content, _))| !content.is_empty())
        .map(|(id, (content, &t))| {
            json!({
                "id": id,
                "content": content,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": t != TYPE_USER_DEFINED,
            })
        })
        .collect()
}

fn post_processor(tokens: &[&str], bos: Option<u32>, eos: Option<u32>) -> Json {
    if bos.is_none() && eos.is_none() {
        return Json::Null;
    }
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut special = serde_json::Map::new();
    let mut add = |id: u32, seq: &mut Vec<Json>| {
        let content = tokens[id as usize];
        seq.push(json!({"SpecialToken": {"id": content, "type_id": 0}}));
        special.insert(
            content.to_string(),
            json!({"id": content, "ids": [id], "tokens": [content]}),
        );
    };
    if let Some(b) = bos {
        add(b, &mut single);
    }
    single.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
    if let Some(e) = eos {
        add(e, &mut single);
    }
    pair.extend(single.iter().cloned());
    pair.push(json!({"Sequence": {"id": "B", "type_id": 1}}));
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special})
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::U8(x) => Some(i64::from(*x)),
        Value::I8(x) => Some(i64::from(*x)),
        Value::U16(x) => Some(i64::from(*x)),
        Value::I16(x) => Some(i64::from(*x)),
        Value::U32(x) => Some(i64::from(*x)),
        Value::I32(x) => Some(i64::from(*x)),
        Value::U64(x) => i64::try_from(*x).ok(),
        Value::I64(x) => Some(*x),
        _ => None,
    }
}

fn string<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{key} is not a string")),
    }
}

fn string_array<'a>(
    md: &'a HashMap<String, Value>,
    key: &str,
) -> Result<Option<Vec<&'a str>>, String> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                _ => Err(format!("{key} holds a non-string value")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(format!("{key} is not an array")),
    }
}

#[cfg(test)]
mod tests;
