//! What goes into the engine (a request) and what comes out (output deltas).

use std::time::Duration;

use crate::sampling::SamplingParams;

/// Identifies a request for its whole life in the engine.
pub type RequestId = u64;

/// Scheduling class: interactive requests are admitted before batch ones, and
/// batch ones are preempted first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// A user waiting on the answer.
    #[default]
    Interactive,
    /// Offline work that can wait.
    Batch,
}

/// A tokenized prompt and how to continue it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The prompt's token ids (at least one).
    pub prompt_token_ids: Vec<u32>,
    /// Sampling and stopping parameters.
    pub params: SamplingParams,
    /// Scheduling class.
    pub priority: Priority,
}

/// Why a sample stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// An end-of-sequence token, a stop token id or a stop string.
    Stop,
    /// `max_tokens` or the model's context length.
    Length,
    /// Aborted by the client or by an engine failure (see [`RequestOutput::error`]).
    Abort,
}

impl FinishReason {
    /// The OpenAI name of the reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Abort => "abort",
        }
    }
}

/// Token counts of a finished request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated, over all samples.
    pub completion_tokens: usize,
    /// Prompt tokens whose KV came from the prefix cache.
    pub cached_prompt_tokens: usize,
}

/// How long a finished request spent in each phase inside the engine, for
/// metrics: front ends measure what their clients see (time to first token,
/// end-to-end latency) themselves, but only the engine knows when a request
/// left the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestTimings {
    /// From `submit` to the first step that computed any of its tokens.
    pub queued: Duration,
    /// From that step to its first generated token (the prompt's forward
    /// passes, including recompute after a preemption before that token).
    pub prefill: Duration,
    /// From the first generated token to the last.
    pub decode: Duration,
}

/// The log-probability of a generated token, with the most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The generated token.
    pub token: u32,
    /// Its log-probability under the model.
    pub logprob: f32,
    /// The `logprobs` most likely tokens and their log-probabilities.
    pub top: Vec<(u32, f32)>,
}

/// One update of one sample of a request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestOutput {
    /// Which of the request's `n` samples this is about.
    pub index: usize,
    /// New text since the previous update of this sample.
    pub text: String,
    /// New token ids since the previous update.
    pub token_ids: Vec<u32>,
    /// Log-probabilities of `token_ids`, when asked for.
    pub logprobs: Vec<TokenLogprob>,
    /// Set on the sample's last update.
    pub finish_reason: Option<FinishReason>,
    /// The stop string or stop token that ended the sample, if one did.
    pub stop_reason: Option<StopReason>,
    /// Set on the request's very last update (all samples finished).
    pub usage: Option<Usage>,
    /// Set with `usage`: where the request's time went.
    pub timings: Option<RequestTimings>,
    /// Why the engine gave up on the request, if it did.
    pub error: Option<String>,
    /// An embedding engine's vector for the prompt, on the request's only update.
    pub embedding: Option<Vec<f32>>,
}

/// What matched when a sample stopped on a stop condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// One of the request's stop strings.
    String(String),
    /// A stop token id or an end-of-sequence token.
    Token(u32),
}
