//! The metrics of one run, computed from its request records the way vLLM's
//! benchmark computes them: throughputs over the run's wall time (first
//! arrival to last completion), latency distributions over completed
//! requests, goodput as completed requests meeting every SLO per second.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::record::{FailureKind, RequestRecord, TokenSource};
use crate::slo::Slo;
use crate::stats::Distribution;

/// Goodput under the run's SLOs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Goodput {
    /// The objectives.
    pub slo: Slo,
    /// Completed requests that met all of them.
    pub requests_met: usize,
    /// `requests_met` per second of the run.
    pub request_rate: f64,
}

/// The metrics of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Requests that completed.
    pub completed: usize,
    /// Requests that failed (never left out: see `failures`).
    pub failed: usize,
    /// Failed requests per kind.
    pub failures: BTreeMap<FailureKind, usize>,
    /// Wall time of the run, from the first arrival to the last completion.
    pub duration_s: f64,
    /// Prompt tokens of completed requests (the server's count where it sent
    /// usage, else the benchmark tokenizer's).
    pub total_input_tokens: usize,
    /// Output tokens of completed requests.
    pub total_output_tokens: usize,
    /// Completed requests per second.
    pub request_throughput: f64,
    /// Output tokens per second.
    pub output_throughput: f64,
    /// Prompt plus output tokens per second.
    pub total_token_throughput: f64,
    /// Goodput, when SLOs were given.
    pub goodput: Option<Goodput>,
    /// Time to first token, milliseconds.
    pub ttft_ms: Option<Distribution>,
    /// Time per output token, milliseconds (requests with 2+ tokens).
    pub tpot_ms: Option<Distribution>,
    /// Inter-token latency (every gap between content chunks), milliseconds.
    pub itl_ms: Option<Distribution>,
    /// End-to-end latency, milliseconds.
    pub e2el_ms: Option<Distribution>,
    /// Most requests in flight at once.
    pub peak_concurrency: usize,
    /// Completed requests whose output count came from chunks, the server
    /// having sent no usage.
    pub output_counted_from_chunks: usize,
    /// Completed requests with fewer output tokens than asked for (an EOS or
    /// stop the server did not ignore, or a server cap).
    pub short_outputs: usize,
    /// Completed requests whose server-side prompt count differs from the
    /// benchmark tokenizer's (e.g. a BOS token the server adds). Not counted
    /// for chat, where the server's count includes the chat template.
    pub prompt_len_mismatches: usize,
    /// Completed requests that streamed no content at all (no TTFT).
    pub no_content: usize,
    /// Requests sent again after the server closed their kept-alive
    /// connection unanswered.
    #[serde(default)]
    pub resent: usize,
}

impl Summary {
    /// The summary of `records`, a run of `duration_s` seconds in which at
    /// most `peak_concurrency` requests were in flight.
    pub fn new(
        records: &[RequestRecord],
        duration_s: f64,
        peak_concurrency: usize,
        slo: Option<Slo>,
    ) -> Self {
        let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.ok()).collect();
        let mut failures = BTreeMap::new();
        for f in records.iter().filter_map(|r| r.error.as_ref()) {
            *failures.entry(f.kind).or_insert(0) += 1;
        }
        let total_input_tokens = ok.iter().map(|r| r.input_tokens()).sum();
        let total_output_tokens: usize = ok.iter().map(|r| r.output_tokens).sum();
        let per_s = |x: f64| {
            if duration_s > 0.0 {
                x / duration_s
            } else {
                0.0
            }
        };
        let ms = |values: Vec<f64>| Distribution::of(&values).map(|d| d.scaled(1e3));
        let goodput = slo.map(|slo| {
            let met = ok
                .iter()
                .filter(|r| {
                    r.ttft_s
                        .is_some_and(|t| slo.met(t, r.tpot_s(), r.latency_s))
                })
                .count();
            Goodput {
                slo,
                requests_met: met,
                request_rate: per_s(met as f64),
            }
        });
        Self {
            completed: ok.len(),
            failed: records.len() - ok.len(),
            failures,
            duration_s,
            total_input_tokens,
            total_output_tokens,
            request_throughput: per_s(ok.len() as f64),
            output_throughput: per_s(total_output_tokens as f64),
            total_token_throughput: per_s((total_input_tokens + total_output_tokens) as f64),
            goodput,
            ttft_ms: ms(ok.iter().filter_map(|r| r.ttft_s).collect()),
            tpot_ms: ms(ok.iter().filter_map(|r| r.tpot_s()).collect()),
            itl_ms: ms(ok.iter().flat_map(|r| r.itl_s.iter().copied()).collect()),
            e2el_ms: ms(ok.iter().map(|r| r.latency_s).collect()),
            peak_concurrency,
            output_counted_from_chunks: ok
                .iter()
                .filter(|r| r.output_tokens_source == TokenSource::Chunks)
                .count(),
            short_outputs: ok.iter().filter(|r| r.output_tokens < r.output_len).count(),
            prompt_len_mismatches: ok
                .iter()
                .filter(|r| r.prompt_tokens.is_some_and(|p| p != r.prompt_len))
                .count(),
            no_content: ok.iter().filter(|r| r.ttft_s.is_none()).count(),
            resent: records.iter().filter(|r| r.resends > 0).count(),
        }
    }

    /// Human-readable notes on what the numbers rest on: failures, fallbacks,
    /// outputs shorter than asked. Empty when there is nothing to say.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.failed > 0 {
            let kinds: Vec<String> = self
                .failures
                .iter()
                .map(|(k, n)| format!("{k} x{n}"))
                .collect();
            notes.push(format!("{} failed: {}", self.failed, kinds.join(", ")));
        }
        if self.output_counted_from_chunks > 0 {
            notes.push(format!(
                "{} requests without usage: output tokens counted as content chunks",
                self.output_counted_from_chunks
            ));
        }
        if self.short_outputs > 0 {
            notes.push(format!(
                "{} requests ended before their output length (EOS or stop not ignored?)",
                self.short_outputs
            ));
        }
        if self.prompt_len_mismatches > 0 {
            notes.push(format!(
                "{} requests: the server counted a different prompt length than the benchmark tokenizer",
                self.prompt_len_mismatches
            ));
        }
        if self.resent > 0 {
            notes.push(format!(
                "{} requests were sent again: the server had closed their kept-alive connection unanswered",
                self.resent
            ));
        }
        if self.no_content > 0 {
            notes.push(format!(
                "{} requests streamed no content (no TTFT)",
                self.no_content
            ));
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Failure;

    fn record(ttft: f64, latency: f64, itl: &[f64], tokens: usize) -> RequestRecord {
        RequestRecord {
            index: 0,
            prompt_len: 10,
            output_len: 4,
            scheduled_s: 0.0,
            sent_s: 0.0,
            ttft_s: Some(ttft),
            latency_s: latency,
            itl_s: itl.to_vec(),
            output_tokens: tokens,
            output_tokens_source: TokenSource::Usage,
            prompt_tokens: Some(10),
            finish_reason: Some("length".into()),
            text: String::new(),
            error: None,
            resends: 0,
        }
    }

    #[test]
    fn metrics_of_hand_made_records() {
        let failed = RequestRecord {
            error: Some(Failure {
                kind: FailureKind::Http,
                message: "HTTP 500".into(),
            }),
            ttft_s: None,
            ..record(0.0, 0.1, &[], 0)
        };
        let records = vec![
            // TPOT (1.0 - 0.1) / 3 = 0.3; meets ttft=200ms, not tpot=250ms.
            record(0.1, 1.0, &[0.3, 0.3, 0.3], 4),
            // TPOT (0.7 - 0.4) / 3 = 0.1; ttft 400 ms misses ttft=200ms.
            record(0.4, 0.7, &[0.1, 0.1, 0.1], 4),
            // Short: 2 of 4 tokens; server counted 11 prompt tokens. TPOT 0.2.
            RequestRecord {
                prompt_tokens: Some(11),
                ..record(0.2, 0.4, &[0.2], 2)
            },
            failed,
        ];
        let slo: Slo = "ttft=200ms,tpot=250ms".parse().unwrap();
        let s = Summary::new(&records, 2.0, 3, Some(slo));
        assert_eq!((s.completed, s.failed), (3, 1));
        assert_eq!(s.failures.get(&FailureKind::Http), Some(&1));
        assert_eq!(s.total_input_tokens, 31);
        assert_eq!(s.total_output_tokens, 10);
        assert!((s.request_throughput - 1.5).abs() < 1e-9);
        assert!((s.output_throughput - 5.0).abs() < 1e-9);
        assert!((s.total_token_throughput - 20.5).abs() < 1e-9);
        // Only the third meets both (ttft 200 ms, tpot 200 ms).
        let g = s.goodput.unwrap();
        assert_eq!(g.requests_met, 1);
        assert!((g.request_rate - 0.5).abs() < 1e-9);
        let ttft = s.ttft_ms.unwrap();
        assert!((ttft.mean - 233.333_333_333).abs() < 1e-6);
        assert!((ttft.median - 200.0).abs() < 1e-9);
        let tpot = s.tpot_ms.unwrap();
        assert!((tpot.mean - 200.0).abs() < 1e-9 && (tpot.max - 300.0).abs() < 1e-9);
        // ITL over all 7 gaps: 0.1 x3, 0.2, 0.3 x3 -> median 0.2, p90 rank 5.4 -> 0.3.
        let itl = s.itl_ms.unwrap();
        assert_eq!(itl.count, 7);
        assert!((itl.median - 200.0).abs() < 1e-9 && (itl.p90 - 300.0).abs() < 1e-9);
        let e2e = s.e2el_ms.unwrap();
        assert!((e2e.median - 700.0).abs() < 1e-9);
        assert_eq!((s.short_outputs, s.prompt_len_mismatches), (1, 1));
        assert_eq!(s.peak_concurrency, 3);
        assert!(s
            .notes()
            .iter()
            .any(|n| n.contains("1 failed: http error x1")));
    }

    #[test]
    fn a_run_where_everything_failed_has_no_latencies() {
        let mut r = record(0.1, 1.0, &[], 1);
        r.error = Some(Failure {
            kind: FailureKind::Timeout,
            message: "timed out".into(),
        });
        let s = Summary::new(&[r], 1.0, 1, None);
        assert_eq!((s.completed, s.failed), (0, 1));
        assert_eq!(s.ttft_ms, None);
        assert_eq!(s.output_throughput, 0.0);
        assert!(s.goodput.is_none());
    }
}
