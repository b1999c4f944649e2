//! `/v1/completions` responses and stream chunks (the same object for both).

use serde::Serialize;
use serde_json::Map;

use super::{Header, UsageBody};

/// A completion, or one chunk of a streamed one.
#[derive(Debug, Serialize)]
pub struct Completion {
    #[serde(flatten)]
    pub header: Header,
    pub choices: Vec<CompletionChoice>,
    /// Always present on a whole completion; on chunks as for chat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<UsageBody>>,
}

/// One choice (or its new text, in a chunk).
#[derive(Debug, Serialize)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<&'static str>,
}

/// Legacy-format logprobs: parallel lists, alternatives as `{token: logprob}`.
#[derive(Debug, Default, Serialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    pub top_logprobs: Vec<Map<String, serde_json::Value>>,
    /// Character offset of each token in the choice's text.
    pub text_offset: Vec<usize>,
}
