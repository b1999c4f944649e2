//! What the engine keeps about each request in flight.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use crate::request::{Priority, RequestOutput, RequestTimings};
use crate::sampling::SamplingParams;
use crate::scheduler::SeqId;

/// Where a request's sequences queue: its class, then arrival order.
#[derive(Clone, Copy)]
pub(super) struct QueueOrder {
    pub priority: Priority,
    pub arrival: u64,
}

/// A request in flight: where its outputs go and what it has used.
pub(super) struct RequestState {
    pub sink: UnboundedSender<RequestOutput>,
    pub params: Arc<SamplingParams>,
    pub order: QueueOrder,
    pub prompt: Vec<u32>,
    /// Sequences of this request still in the engine.
    pub seqs: Vec<SeqId>,
    /// The `n - 1` other samples are forked from the first once its prompt is
    /// computed, so they share its prompt blocks.
    pub forked: bool,
    pub admitted: bool,
    pub completion_tokens: usize,
    pub cached_prompt_tokens: usize,
    /// When it was submitted, first scheduled, and produced its first token.
    pub arrival: Instant,
    pub scheduled: Option<Instant>,
    pub first_token: Option<Instant>,
}

impl RequestState {
    /// Where the request's time went, at its end.
    pub fn timings(&self, now: Instant) -> RequestTimings {
        let scheduled = self.scheduled.unwrap_or(now);
        let first_token = self.first_token.unwrap_or(now);
        RequestTimings {
            queued: scheduled.saturating_duration_since(self.arrival),
            prefill: first_token.saturating_duration_since(scheduled),
            decode: now.saturating_duration_since(first_token),
        }
    }
}
