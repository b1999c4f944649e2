//! One HTTP request's context: its id, caller and deadline, and what its log
//! line will say. The middleware creates it and puts it in the request's
//! extensions; handlers name the model; a streamed response's body keeps it
//! alive until the stream ends. When the last holder drops it, it logs one
//! line for the request.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::auth::Caller;
use crate::error::ApiError;

/// The target of the per-request log lines (filter it with `RUST_LOG`).
pub const LOG_TARGET: &str = "tessera_server::requests";

/// What one request did, filled in as it goes.
#[derive(Debug, Default)]
struct Outcome {
    model: Option<String>,
    version: Option<u64>,
    status: Option<u16>,
    prompt_tokens: u64,
    completion_tokens: u64,
    queue_time: Option<Duration>,
    first_token: Option<Duration>,
    finished: Option<Duration>,
    finish_reasons: Vec<&'static str>,
}

/// A request's context.
#[derive(Debug)]
pub struct RequestContext {
    /// The `x-request-id` (the client's, or one made up).
    pub id: String,
    /// Who it counts against.
    pub caller: Caller,
    /// When the server received it.
    pub received: Instant,
    /// When it must be done, if the server has a request timeout.
    pub deadline: Option<Instant>,
    method: String,
    route: String,
    outcome: Mutex<Outcome>,
    batch: bool,
}

impl RequestContext {
    /// A context for a request received now.
    pub fn new(
        id: String,
        caller: Caller,
        method: &str,
        route: &str,
        timeout: Option<Duration>,
    ) -> Self {
        let received = Instant::now();
        Self {
            id,
            caller,
            received,
            deadline: timeout.and_then(|t| received.checked_add(t)),
            method: method.to_string(),
            route: route.to_string(),
            outcome: Mutex::default(),
            batch: false,
        }
    }

    /// The same context for a line of a batch job: whatever its body says,
    /// it runs at batch priority.
    pub fn for_batch(mut self) -> Self {
        self.batch = true;
        self
    }

    /// Whether it is a line of a batch job.
    pub fn is_batch(&self) -> bool {
        self.batch
    }

    fn outcome(&self) -> std::sync::MutexGuard<'_, Outcome> {
        self.outcome.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the model serving the request.
    pub fn set_model(&self, name: &str) {
        self.outcome().model = Some(name.to_string());
    }

    /// The route it matched (`unmatched` when none).
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The model version serving the request, once known.
    pub fn version(&self) -> Option<u64> {
        self.outcome().version
    }

    /// Records the model version serving the request.
    pub fn set_version(&self, version: u64) {
        self.outcome().version = Some(version);
    }

    /// The model serving the request, if one was resolved.
    pub fn model(&self) -> Option<String> {
        self.outcome().model.clone()
    }

    /// Records the response status.
    pub fn set_status(&self, status: u16) {
        self.outcome().status = Some(status);
    }

    /// Records prompt tokens submitted.
    pub fn add_prompt_tokens(&self, n: u64) {
        self.outcome().prompt_tokens += n;
    }

    /// Records generated tokens; the first ones set the time to first token.
    pub fn add_completion_tokens(&self, n: u64, now: Instant) {
        let mut o = self.outcome();
        o.completion_tokens += n;
        if o.first_token.is_none() {
            o.first_token = Some(now.saturating_duration_since(self.received));
        }
    }

    /// Records an engine request's queue time (the longest of its prompts).
    pub fn add_queue_time(&self, t: Duration) {
        let mut o = self.outcome();
        o.queue_time = Some(o.queue_time.map_or(t, |q| q.max(t)));
    }

    /// Records why a choice ended.
    pub fn add_finish_reason(&self, reason: &'static str) {
        self.outcome().finish_reasons.push(reason);
    }

    /// Records that generation is over (the log line's total time).
    pub fn finish(&self, now: Instant) {
        let mut o = self.outcome();
        if o.finished.is_none() {
            o.finished = Some(now.saturating_duration_since(self.received));
        }
    }

    /// Prompt and completion tokens so far.
    pub fn tokens(&self) -> (u64, u64) {
        let o = self.outcome();
        (o.prompt_tokens, o.completion_tokens)
    }
}

fn millis(d: Option<Duration>) -> Option<f64> {
    d.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3)
}

impl Drop for RequestContext {
    fn drop(&mut self) {
        let o = self
            .outcome
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        let total = o.finished.unwrap_or_else(|| self.received.elapsed());
        let finish_reason = o.finish_reasons.join(",");
        tracing::info!(
            target: LOG_TARGET,
            request_id = %self.id,
            method = %self.method,
            route = %self.route,
            caller = %self.caller,
            model = o.model.as_deref().unwrap_or(""),
            version = o.version.unwrap_or(0),
            status = o.status.unwrap_or(0),
            prompt_tokens = o.prompt_tokens,
            completion_tokens = o.completion_tokens,
            queue_ms = millis(o.queue_time),
            ttft_ms = millis(o.first_token),
            total_ms = millis(Some(total)),
            finish_reason = %finish_reason,
            "request finished"
        );
    }
}

/// The context, as a handler argument.
#[derive(Debug, Clone)]
pub struct Ctx(pub Arc<RequestContext>);

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Arc<RequestContext>>()
            .cloned()
            .map(Ctx)
            .ok_or_else(|| ApiError::internal("the request context is missing"))
    }
}
