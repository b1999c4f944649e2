//! The drift signals: what is measured of each request, and the fixed bins
//! (numeric) or categories each is compared over.

use serde::Serialize;

/// A signal's kind, which decides its test.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Compared by PSI over these bin edges (a value goes to the bin after
    /// the last edge at or below it) and the two-sample KS test.
    Numeric(&'static [f64]),
    /// Compared by PSI over the categories and chi-squared.
    Categorical(&'static [&'static str]),
}

/// One distribution watched per model version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Tokens in a prompt.
    PromptTokens,
    /// Tokens generated for one choice.
    CompletionTokens,
    /// Seconds from receiving the request to a prompt's first token.
    TimeToFirstToken,
    /// How a choice ended (stop, length, abort, error).
    FinishReason,
    /// Mean log-probability of a choice's sampled tokens (the model's own
    /// surprise at its output). Only from requests that ask for `logprobs`:
    /// the engine computes log-probabilities (a pass over the vocabulary per
    /// token) only then.
    MeanLogprob,
    /// Whether a choice asked to be JSON (`response_format` `json_object` /
    /// `json_schema`, vLLM's `json`) parses as JSON. Constrained decoding
    /// makes every finished output valid, so what moves this is outputs cut
    /// short (`max_tokens`, a stop string): a change in the prompts or
    /// schemas clients send. Only from requests that ask for JSON.
    OutputParses,
}

/// Powers of two: token counts span orders of magnitude.
const TOKEN_EDGES: &[f64] = &[
    2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];
/// Seconds, as the TTFT histogram's buckets roughly.
const TTFT_EDGES: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Nats per token: near 0 is confident, below -4 is mostly surprise.
const LOGPROB_EDGES: &[f64] = &[
    -8.0, -4.0, -2.0, -1.5, -1.0, -0.75, -0.5, -0.25, -0.1, -0.05, -0.01,
];
/// The categories of [`Signal::OutputParses`].
pub const PARSE_OUTCOMES: &[&str] = &["parsed", "unparsed"];
/// The finish reasons the tracker reports; anything else counts as `other`.
pub const FINISH_REASONS: &[&str] = &["stop", "length", "abort", "error", "other"];

impl Signal {
    /// Every signal, in report order.
    pub const ALL: [Signal; 6] = [
        Signal::PromptTokens,
        Signal::CompletionTokens,
        Signal::TimeToFirstToken,
        Signal::FinishReason,
        Signal::MeanLogprob,
        Signal::OutputParses,
    ];

    /// Its name in metrics labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::PromptTokens => "prompt_tokens",
            Signal::CompletionTokens => "completion_tokens",
            Signal::TimeToFirstToken => "time_to_first_token",
            Signal::FinishReason => "finish_reason",
            Signal::MeanLogprob => "mean_logprob",
            Signal::OutputParses => "output_parses",
        }
    }

    /// The signal named `name`.
    pub fn from_name(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// How it is binned and tested.
    pub fn kind(self) -> Kind {
        match self {
            Signal::PromptTokens | Signal::CompletionTokens => Kind::Numeric(TOKEN_EDGES),
            Signal::TimeToFirstToken => Kind::Numeric(TTFT_EDGES),
            Signal::FinishReason => Kind::Categorical(FINISH_REASONS),
            Signal::MeanLogprob => Kind::Numeric(LOGPROB_EDGES),
            Signal::OutputParses => Kind::Categorical(PARSE_OUTCOMES),
        }
    }

    /// Whether only some requests show it (those asking for logprobs or for
    /// JSON), so a reference may never fill up with it.
    pub fn is_optional(self) -> bool {
        matches!(self, Signal::MeanLogprob | Signal::OutputParses)
    }

    /// Where it sits in [`Signal::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The value a finish reason is stored as: its category's index.
pub fn finish_reason_value(reason: &str) -> f64 {
    let i = FINISH_REASONS
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(FINISH_REASONS.len() - 1);
    i as f64
}

/// The value a parse outcome is stored as: its category's index.
pub fn parse_outcome_value(parsed: bool) -> f64 {
    if parsed {
        0.0
    } else {
        1.0
    }
}

/// Counts of `values` over the signal's bins or categories.
pub fn bin_counts(kind: Kind, values: impl Iterator<Item = f64>) -> Vec<u64> {
    match kind {
        Kind::Numeric(edges) => {
            let mut counts = vec![0; edges.len() + 1];
            for v in values {
                counts[edges.partition_point(|&e| e <= v)] += 1;
            }
            counts
        }
        Kind::Categorical(names) => {
            let mut counts = vec![0; names.len()];
            for v in values {
                // Values are category indices this module wrote.
                let i = (v.max(0.0) as usize).min(names.len() - 1);
                counts[i] += 1;
            }
            counts
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_closed_below() {
        let counts = bin_counts(
            Signal::PromptTokens.kind(),
            [1.0, 2.0, 3.0, 8192.0, 1e9].into_iter(),
        );
        assert_eq!(counts[0], 1);
        assert_eq!(counts[1], 2);
        assert_eq!(counts[13], 2);
        assert_eq!(counts.len(), 14);
    }

    #[test]
    fn finish_reasons_have_categories() {
        let values = ["stop", "length", "length", "weird"].map(finish_reason_value);
        let counts = bin_counts(Signal::FinishReason.kind(), values.into_iter());
        assert_eq!(counts, vec![1, 2, 0, 0, 1]);
        for s in Signal::ALL {
            assert_eq!(Signal::from_name(s.as_str()), Some(s));
            assert_eq!(Signal::ALL[s.index()], s);
        }
    }
}
