//! Prompts from files: JSONL (one prompt per line) and ShareGPT
//! conversations, sampled with the seed.

use std::path::Path;

use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use serde_json::Value;

use super::{sample, WorkItem, Workload};
use crate::error::{BenchError, Result};
use crate::tokenizer::Tokenizer;

/// ShareGPT filters, as vLLM's `sample_sharegpt_requests`: prompts and
/// replies under 4 tokens are dropped, and with the reply's own length as the
/// output length, prompts over 1024 tokens and pairs over 2048.
const MIN_LEN: usize = 4;
const MAX_PROMPT_LEN: usize = 1024;
const MAX_TOTAL_LEN: usize = 2048;

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))
}

fn dataset_error(path: &Path, line: usize, message: impl Into<String>) -> BenchError {
    BenchError::Dataset {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

pub(super) async fn jsonl(
    path: &Path,
    default_output_len: usize,
    no_shuffle: bool,
    tok: &Tokenizer,
    count: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Workload> {
    let text = read(path)?;
    let mut pool = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |m: String| dataset_error(path, i + 1, m);
        let v: Value = serde_json::from_str(line).map_err(|e| err(format!("not JSON: {e}")))?;
        let prompt = v
            .get("prompt")
            .and_then(Value::as_str)
            .ok_or_else(|| err("expected an object with a string \"prompt\"".into()))?;
        let output_len = match v.get("output_len") {
            None | Some(Value::Null) => default_output_len,
            Some(n) => match n.as_u64() {
                Some(n) if n > 0 => n as usize,
                _ => {
                    return Err(err(format!(
                        "\"output_len\" must be a positive integer, not {n}"
                    )))
                }
            },
        };
        pool.push((prompt.to_string(), output_len));
    }
    if pool.is_empty() {
        return Err(dataset_error(path, 0, "no prompts in the file"));
    }
    let mut notes = Vec::new();
    let mut items = Vec::with_capacity(count);
    for (prompt, output_len) in sample(&pool, count, !no_shuffle, rng, &mut notes) {
        let prompt_len = tok.encode(&prompt).await?.len();
        items.push(WorkItem {
            prompt,
            prompt_len,
            output_len,
        });
    }
    Ok(Workload { items, notes })
}

#[derive(Deserialize)]
struct Conversation {
    #[serde(default)]
    conversations: Vec<Turn>,
}

#[derive(Deserialize)]
struct Turn {
    #[serde(default)]
    value: Value,
}

pub(super) async fn sharegpt(
    path: &Path,
    fixed_output_len: Option<usize>,
    no_shuffle: bool,
    tok: &Tokenizer,
    count: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Workload> {
    let text = read(path)?;
    let conversations: Vec<Conversation> = serde_json::from_str(&text).map_err(|e| {
        dataset_error(
            path,
            e.line(),
            format!("not a ShareGPT JSON array of conversations: {e}"),
        )
    })?;
    let pairs: Vec<(String, String)> = conversations
        .into_iter()
        .filter_map(|c| {
            let mut turns = c.conversations.into_iter();
            let prompt = turns.next()?.value.as_str()?.to_string();
            let reply = turns.next()?.value.as_str()?.to_string();
            Some((prompt, reply))
        })
        .collect();
    let mut notes = Vec::new();
    // Tokenize in the shuffled order until enough pass the filters, as vLLM
    // does: a big file is never tokenized whole.
    let mut accepted = Vec::new();
    let (mut too_short, mut too_long) = (0, 0);
    for (prompt, reply) in sample(&pairs, pairs.len(), !no_shuffle, rng, &mut notes) {
        if accepted.len() == count {
            break;
        }
        let prompt_len = tok.encode(&prompt).await?.len();
        let output_len = match fixed_output_len {
            Some(n) => n,
            None => tok.encode(&reply).await?.len(),
        };
        if prompt_len < MIN_LEN || (fixed_output_len.is_none() && output_len < MIN_LEN) {
            too_short += 1;
            continue;
        }
        if fixed_output_len.is_none()
            && (prompt_len > MAX_PROMPT_LEN || prompt_len + output_len > MAX_TOTAL_LEN)
        {
            too_long += 1;
            continue;
        }
        accepted.push(WorkItem {
            prompt,
            prompt_len,
            output_len,
        });
    }
    if accepted.is_empty() {
        return Err(dataset_error(
            path,
            0,
            format!(
                "no usable conversation ({} with two turns; {too_short} too short, {too_long} too long)",
                pairs.len()
            ),
        ));
    }
    if too_short + too_long > 0 {
        notes.push(format!(
            "ShareGPT: skipped {too_short} conversations under {MIN_LEN} tokens and {too_long} over \
             {MAX_PROMPT_LEN} prompt / {MAX_TOTAL_LEN} total tokens"
        ));
    }
    let items = if accepted.len() < count {
        sample(&accepted, count, false, rng, &mut notes)
    } else {
        accepted
    };
    Ok(Workload { items, notes })
}
