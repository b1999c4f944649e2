//! OpenAI's response shapes, field for field, as serde types.

pub mod chat;
pub mod completions;
pub mod models;

use serde::Serialize;
use tessera_engine::request::Usage;

/// Logprobs have no -inf in JSON; OpenAI and vLLM floor them at this value.
pub const LOGPROB_FLOOR: f32 = -9999.0;

/// A logprob as JSON can carry it.
pub fn finite_logprob(x: f32) -> f32 {
    if x.is_nan() {
        LOGPROB_FLOOR
    } else {
        x.max(LOGPROB_FLOOR)
    }
}

/// `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct UsageBody {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
}

impl UsageBody {
    /// Adds one engine request's usage (a completions request with several
    /// prompts runs one engine request per prompt).
    pub fn add(&mut self, u: &Usage) {
        self.prompt_tokens += u.prompt_tokens;
        self.completion_tokens += u.completion_tokens;
        self.total_tokens += u.prompt_tokens + u.completion_tokens;
        self.prompt_tokens_details.cached_tokens += u.cached_prompt_tokens;
    }
}

/// The fields every response and chunk starts with.
#[derive(Debug, Clone, Serialize)]
pub struct Header {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: String,
}
