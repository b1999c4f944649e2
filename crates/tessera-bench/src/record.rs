//! What one request did, as measured by the client: kept for every request,
//! failed ones included, and written whole to `--json`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a request failed. Failures are counted per kind in the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The server answered with a non-2xx status.
    Http,
    /// `--timeout` passed before the stream ended.
    Timeout,
    /// The connection could not be made or the request not sent.
    Connect,
    /// The stream stopped before `data: [DONE]` (connection closed or broken).
    Truncated,
    /// The stream carried an error object instead of (or after) chunks.
    StreamError,
    /// The response was not a well-formed SSE stream of JSON chunks.
    Protocol,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http => "http error",
            Self::Timeout => "timeout",
            Self::Connect => "connect error",
            Self::Truncated => "truncated stream",
            Self::StreamError => "error in stream",
            Self::Protocol => "bad response",
        })
    }
}

/// A failed request: the kind, and the details (status and body, the error).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// Details, e.g. `HTTP 500: {"error": ...}`.
    pub message: String,
}

/// Where a request's output token count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// The server's `usage.completion_tokens` (asked for with
    /// `stream_options.include_usage`).
    Usage,
    /// The number of non-empty content chunks, because the server sent no
    /// usage: exact only if it streams one token per chunk.
    Chunks,
}

/// One request's measurements. Times are seconds; `scheduled_s` and `sent_s`
/// count from the start of the run, the others from `sent_s`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Position in the run's workload.
    pub index: usize,
    /// Prompt tokens by the benchmark's tokenizer.
    pub prompt_len: usize,
    /// Output tokens asked for (`max_tokens`).
    pub output_len: usize,
    /// When the arrival schedule released it.
    pub scheduled_s: f64,
    /// When it was sent (later than `scheduled_s` when it waited for a
    /// `--max-concurrency` slot).
    pub sent_s: f64,
    /// Time to the first non-empty content chunk.
    pub ttft_s: Option<f64>,
    /// Time to the end of the stream (or to the failure).
    pub latency_s: f64,
    /// Gaps between successive non-empty content chunks.
    pub itl_s: Vec<f64>,
    /// Output tokens (see `output_tokens_source`).
    pub output_tokens: usize,
    /// Where `output_tokens` came from.
    pub output_tokens_source: TokenSource,
    /// The server's `usage.prompt_tokens`, when it sent usage.
    pub prompt_tokens: Option<usize>,
    /// The choice's `finish_reason` (`length`, `stop`, ...), when sent.
    pub finish_reason: Option<String>,
    /// The generated text.
    pub text: String,
    /// Why it failed; `None` for a completed request.
    pub error: Option<Failure>,
    /// Times it was sent again because the server had closed the kept-alive
    /// connection it went out on without answering (llama-server does after
    /// every stream). Its times count from the first send.
    #[serde(default)]
    pub resends: usize,
}

impl RequestRecord {
    /// Whether the request completed (a full stream ending in `[DONE]`).
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// Time per output token, as vLLM defines it (see [`crate::stats::tpot`]).
    pub fn tpot_s(&self) -> Option<f64> {
        crate::stats::tpot(self.latency_s, self.ttft_s?, self.output_tokens)
    }

    /// Prompt tokens as the server counted them when it said, else as ours did.
    pub fn input_tokens(&self) -> usize {
        self.prompt_tokens.unwrap_or(self.prompt_len)
    }
}
