//! Text ↔ token ids: a Hugging Face `tokenizers` tokenizer, loaded from a
//! tokenizer.json or rebuilt from GGUF metadata (see [`gguf`]), plus the model's
//! special-token facts (BOS, end-of-generation tokens).

mod gguf;

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use serde_json::Value as Json;

use crate::error::{ModelError, Result};

/// A model's tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_token_id: Option<u32>,
    eos_token_ids: Vec<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_token_id", &self.bos_token_id)
            .field("eos_token_ids", &self.eos_token_ids)
            .finish()
    }
}

impl Tokenizer {
    /// Rebuilds the tokenizer a GGUF file describes (`tokenizer.ggml.*`).
    pub fn from_gguf(path: &Path, metadata: &HashMap<String, Value>) -> Result<Self> {
        let built = gguf::build(metadata)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        let inner =
            tokenizers::Tokenizer::from_bytes(built.json.to_string().as_bytes()).map_err(|e| {
                ModelError::Tokenizer(format!(
                    "{}: rebuilding the tokenizer from GGUF metadata: {e}",
                    path.display()
                ))
            })?;
        Ok(Self {
            inner,
            bos_token_id: built.bos_token_id,
            eos_token_ids: built.eos_token_ids,
        })
    }

    /// Loads `tokenizer.json` from a Hugging Face model directory, with the BOS and
    /// end-of-generation ids from config.json, generation_config.json and
    /// tokenizer_config.json.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        // tokenizers panics on some malformed files (a merge longer than its
        // buffer, an unknown decoder); the file comes from the internet, so
        // that is an error naming it, not a crash.
        let read = || tokenizers::Tokenizer::from_file(&path);
        let inner = std::panic::catch_unwind(read)
            .map_err(|_| {
                ModelError::Tokenizer(format!("{}: malformed tokenizer file", path.display()))
            })?
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        // A tokenizer.json may pad or truncate to a training length (BERT's
        // pad to 128); lengths are the server's to check, never silently changed.
        let mut inner = inner;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        let mut tokenizer = Self {
            inner,
            bos_token_id: None,
            eos_token_ids: Vec::new(),
        };
        let config = read_json_if_present(&dir.join("config.json"))?;
        let generation = read_json_if_present(&dir.join("generation_config.json"))?;
        let tok_config = read_json_if_present(&dir.join("tokenizer_config.json"))?;
        for json in [&config, &generation].into_iter().flatten() {
            tokenizer
                .eos_token_ids
                .extend(json_ids(json.get("eos_token_id")));
            if tokenizer.bos_token_id.is_none() {
                tokenizer.bos_token_id = json_ids(json.get("bos_token_id")).first().copied();
            }
        }
        if let Some(json) = &tok_config {
            for (key, is_eos) in [("eos_token", true), ("bos_token", false)] {
                let id = special_token_content(json.get(key))
                    .and_then(|content| tokenizer.inner.token_to_id(content));
                match (id, is_eos) {
                    (Some(id), true) => tokenizer.eos_token_ids.push(id),
                    (Some(id), false) if tokenizer.bos_token_id.is_none() => {
                        tokenizer.bos_token_id = Some(id)
                    }
                    _ => {}
                }
            }
        }
        tokenizer.eos_token_ids.sort_unstable();
        tokenizer.eos_token_ids.dedup();
        Ok(tokenizer)
    }

    /// Token ids of `text`. Special tokens written in the text (`<|im_start|>`) are
    /// recognised as such; `add_special_tokens` adds what the model puts around a
    /// sequence (its BOS, for most).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(|e| ModelError::Tokenizer(format!("encoding failed: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`; special tokens are left out when `skip_special_tokens`.
    /// Ids outside the vocabulary are an error.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let size = self.vocab_size() as u32;
        if let Some(bad) = ids.iter().find(|&&id| id >= size) {
            return Err(ModelError::Tokenizer(format!(
                "token id {bad} is outside the vocabulary of {size} tokens"
            )));
        }
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| ModelError::Tokenizer(format!("decoding failed: {e}")))
    }

    /// Tokens in the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string, if it is one.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token string of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The beginning-of-sequence token, if the model has one.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }

    /// Tokens that end generation (EOS, end-of-turn).
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }

    /// The tokenizer as a tokenizer.json document (what structured output
    /// reads each token's bytes from).
    pub fn to_json(&self) -> Result<Json> {
        let text = self
            .inner
            .to_string(false)
            .map_err(|e| ModelError::Tokenizer(format!("serializing the tokenizer: {e}")))?;
        serde_json::from_str(&text)
            .map_err(|e| ModelError::Tokenizer(format!("serializing the tokenizer: {e}")))
    }
}

impl tessera_engine::TokenDecoder for Tokenizer {
    fn decode(
        &self,
        ids: &[u32],
        skip_special_tokens: bool,
    ) -> std::result::Result<String, String> {
        Tokenizer::decode(self, ids, skip_special_tokens).map_err(|e| e.to_string())
    }
}

fn read_json_if_present(path: &Path) -> Result<Option<Json>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ModelError::format(path, format!("invalid JSON: {e}")))
}

/// `eos_token_id` may be one id or a list of them.
fn json_ids(value: Option<&Json>) -> Vec<u32> {
    match value {
        Some(Json::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .into_iter()
            .collect(),
        Some(Json::Array(items)) => items
            .iter()
            .filter_map(|n| n.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect(),
        _ => Vec::new(),
    }
}

/// tokenizer_config.json writes a special token as a string or as
/// `{"content": "..."}`.
fn special_token_content(value: Option<&Json>) -> Option<&str> {
    match value? {
        Json::String(s) => Some(s),
        Json::Object(map) => map.get("content")?.as_str(),
        _ => None,
    }
}
