//! Token counts for building workloads: a local `tokenizer.json` (the
//! `tokenizers` crate), or the server's own tokenizer over HTTP. The server's
//! is the default because it is by definition the one that counts: no file to
//! find, and no mismatch between a GGUF's tokenizer and a separate copy.
//!
//! Two HTTP shapes exist: vLLM's and tessera's (`POST /tokenize`
//! `{"model", "prompt", "add_special_tokens"}` -> `{"tokens"}`, `POST
//! /detokenize` `{"model", "tokens"}` -> `{"prompt"}`) and llama.cpp's
//! (`{"content", "add_special"}` -> `{"tokens"}`, `{"tokens"}` -> `{"content"}`).
//! The first that answers a probe is used. Special tokens (BOS) are never
//! added: lengths are those of the text, as the server then counts them
//! (`usage.prompt_tokens` may be one more where it adds a BOS).

use std::path::Path;

use serde_json::{json, Value};

use crate::client::fetch_text;
use crate::error::{BenchError, Result};

/// A tokenizer, local or the server's.
pub enum Tokenizer {
    /// A `tokenizer.json`.
    Local(Box<tokenizers::Tokenizer>),
    /// The server's `/tokenize` and `/detokenize`.
    Remote(Remote),
}

/// The server's tokenizer endpoints.
pub struct Remote {
    client: reqwest::Client,
    root: String,
    model: String,
    api_key: Option<String>,
    shape: Shape,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    Vllm,
    LlamaCpp,
}

impl Tokenizer {
    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let t = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| BenchError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self::Local(Box::new(t)))
    }

    /// The tokenizer of the server at `root` (its URL without `/v1`),
    /// probing which request shape it speaks.
    pub async fn remote(
        client: reqwest::Client,
        root: &str,
        model: &str,
        api_key: Option<String>,
    ) -> Result<Self> {
        let mut errors = Vec::new();
        for shape in [Shape::Vllm, Shape::LlamaCpp] {
            let remote = Remote {
                client: client.clone(),
                root: root.trim_end_matches('/').to_string(),
                model: model.to_string(),
                api_key: api_key.clone(),
                shape,
            };
            match remote.encode("Hello world").await {
                Ok(ids) if !ids.is_empty() => return Ok(Self::Remote(remote)),
                Ok(_) => errors.push(format!("{shape:?} shape: no tokens for 'Hello world'")),
                Err(e) => errors.push(format!("{shape:?} shape: {e}")),
            }
        }
        Err(BenchError::Tokenizer(format!(
            "the server at {root} has no usable /tokenize ({}); pass --tokenizer PATH/tokenizer.json",
            errors.join("; ")
        )))
    }

    /// Where the tokens come from, for the report.
    pub fn describe(&self) -> String {
        match self {
            Self::Local(_) => "tokenizer.json (--tokenizer)".into(),
            Self::Remote(r) => format!("{}/tokenize ({:?} shape)", r.root, r.shape),
        }
    }

    /// The ids of `text`, without special tokens.
    pub async fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Self::Local(t) => t
                .encode(text, false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| BenchError::Tokenizer(e.to_string())),
            Self::Remote(r) => r.encode(text).await,
        }
    }

    /// The text of `ids` (special tokens kept, so text and ids round-trip).
    pub async fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Self::Local(t) => t
                .decode(ids, false)
                .map_err(|e| BenchError::Tokenizer(e.to_string())),
            Self::Remote(r) => r.decode(ids).await,
        }
    }
}

impl Remote {
    async fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let body = match self.shape {
            Shape::Vllm => {
                json!({"model": self.model, "prompt": text, "add_special_tokens": false})
            }
            Shape::LlamaCpp => json!({"content": text, "add_special": false}),
        };
        let reply = self.post("/tokenize", &body).await?;
        reply
            .get("tokens")
            .and_then(Value::as_array)
            .and_then(|ts| {
                ts.iter()
                    .map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok()))
                    .collect::<Option<Vec<u32>>>()
            })
            .ok_or_else(|| {
                BenchError::Tokenizer(format!(
                    "/tokenize answered without a list of token ids: {reply}"
                ))
            })
    }

    async fn decode(&self, ids: &[u32]) -> Result<String> {
        let (body, field) = match self.shape {
            Shape::Vllm => (json!({"model": self.model, "tokens": ids}), "prompt"),
            Shape::LlamaCpp => (json!({"tokens": ids}), "content"),
        };
        let reply = self.post("/detokenize", &body).await?;
        reply
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                BenchError::Tokenizer(format!("/detokenize answered without '{field}': {reply}"))
            })
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.root);
        let err = |message: String| BenchError::Server {
            url: url.clone(),
            message,
        };
        let request = self.client.post(&url).json_body(body);
        let text = fetch_text(request, self.api_key.as_deref())
            .await
            .map_err(err)?;
        serde_json::from_str(&text).map_err(|e| err(format!("not JSON ({e}): {text}")))
    }
}

/// A JSON body without reqwest's `json` feature.
trait JsonBody {
    fn json_body(self, body: &Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, body: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(body.to_string())
    }
}
