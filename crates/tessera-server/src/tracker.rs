//! What a generation request is measured by while its outputs flow: time to
//! first token, inter-token latency, per-token and end-to-end latency, queue
//! time and lengths into the metrics, token counts and finish reasons into the
//! request's log line. It also holds the request's stream slot and token
//! reservation, so both are given back when the request ends, however it ends,
//! and hands the drift monitor what the request showed.

use std::sync::Arc;
use std::time::Instant;

use tessera_engine::request::RequestOutput;

use crate::context::RequestContext;
use crate::metrics::Metrics;
use crate::monitoring::signals::{finish_reason_value, parse_outcome_value};
use crate::monitoring::{DriftMonitor, Observation, Signal};
use crate::rate_limit::TokenReservation;
use crate::state::AppState;
use crate::streams::StreamSlot;

/// What a request holds while it runs.
#[derive(Debug, Default)]
pub struct Admission {
    /// Its tokens under a token rate limit.
    pub reservation: Option<TokenReservation>,
    /// Its slot under a per-key stream limit.
    pub slot: Option<StreamSlot>,
}

#[derive(Debug, Clone, Copy, Default)]
struct ChoiceState {
    first_token: Option<Instant>,
    last_token: Option<Instant>,
    tokens: u64,
    finished: bool,
    /// Sum and count of its sampled tokens' logprobs, when reported.
    logprob_sum: f64,
    logprobs: u64,
}

/// The measurements of one request's choices.
pub struct Tracker {
    ctx: Arc<RequestContext>,
    metrics: Arc<Metrics>,
    /// The metrics' labels: model and version.
    model: Arc<str>,
    version: Arc<str>,
    n: usize,
    choices: Vec<ChoiceState>,
    /// Per prompt: whether it has produced a token yet.
    prompt_started: Vec<bool>,
    prompt_tokens: u64,
    generated: u64,
    admission: Admission,
    /// The drift signals' values, handed over when the request ends.
    drift: Arc<DriftMonitor>,
    observation: Observation,
    version_number: u64,
    /// Each choice's text so far, kept only when the request asked for JSON
    /// (whether it parses is a drift signal).
    json_texts: Option<Vec<String>>,
}

impl Tracker {
    /// Tracks `n` choices of each prompt into `state`'s metrics and drift
    /// monitor; counts the prompts' tokens now.
    pub fn new(
        ctx: Arc<RequestContext>,
        state: &AppState,
        model: &str,
        version: u64,
        prompt_lens: &[usize],
        n: usize,
        admission: Admission,
    ) -> Self {
        let (metrics, drift) = (state.metrics.clone(), state.drift.clone());
        let prompt_tokens = prompt_lens.iter().map(|&l| l as u64).sum();
        let version_number = version;
        let version = version.to_string();
        let observation = prompt_lens
            .iter()
            .map(|&l| (Signal::PromptTokens, l as f64))
            .collect();
        metrics
            .request
            .prompt_tokens
            .with_label_values(&[model, &version])
            .inc_by(prompt_tokens);
        ctx.add_prompt_tokens(prompt_tokens);
        Self {
            ctx,
            metrics,
            model: model.into(),
            version: version.into(),
            n,
            choices: vec![ChoiceState::default(); prompt_lens.len() * n],
            prompt_started: vec![false; prompt_lens.len()],
            prompt_tokens,
            generated: 0,
            admission,
            drift,
            observation,
            version_number,
            json_texts: None,
        }
    }

    /// The request asked for JSON output: whether each choice parses is
    /// observed when it finishes.
    pub fn expect_json(&mut self) {
        self.json_texts = Some(vec![String::new(); self.choices.len()]);
    }

    /// Records one output of choice `choice`.
    pub fn on_output(&mut self, choice: usize, out: &RequestOutput) {
        let now = Instant::now();
        let (metrics, model, version) = (
            self.metrics.clone(),
            self.model.clone(),
            self.version.clone(),
        );
        let m = &metrics.request;
        let label = &[&*model, &*version];
        let prompt = choice / self.n.max(1);
        let k = out.token_ids.len() as u64;
        if let Some(text) = self.json_texts.as_mut().and_then(|t| t.get_mut(choice)) {
            text.push_str(&out.text);
        }
        if k > 0 {
            self.generated += k;
            m.generation_tokens.with_label_values(label).inc_by(k);
            self.ctx.add_completion_tokens(k, now);
            if let Some(started) = self.prompt_started.get_mut(prompt) {
                if !*started {
                    *started = true;
                    let ttft = now.saturating_duration_since(self.ctx.received);
                    self.observation
                        .push((Signal::TimeToFirstToken, ttft.as_secs_f64()));
                    m.time_to_first_token
                        .with_label_values(label)
                        .observe(ttft.as_secs_f64());
                }
            }
            if let Some(c) = self.choices.get_mut(choice) {
                if let Some(prev) = c.last_token {
                    m.inter_token_latency
                        .with_label_values(label)
                        .observe(now.saturating_duration_since(prev).as_secs_f64());
                }
                c.first_token.get_or_insert(now);
                c.last_token = Some(now);
                c.tokens += k;
                for lp in &out.logprobs {
                    c.logprob_sum += f64::from(lp.logprob);
                    c.logprobs += 1;
                }
            }
        }
        if out.error.is_some() {
            // The engine gave up on the whole prompt: every sample of it ends.
            let first = prompt * self.n;
            for c in first..(first + self.n).min(self.choices.len()) {
                self.finish_choice(c, "error");
            }
        } else if let Some(reason) = out.finish_reason {
            self.finish_choice(choice, reason.as_str());
        }
        if let Some(usage) = &out.usage {
            let e2e = now.saturating_duration_since(self.ctx.received);
            m.e2e_latency
                .with_label_values(label)
                .observe(e2e.as_secs_f64());
            m.prompt_length
                .with_label_values(label)
                .observe(usage.prompt_tokens as f64);
            m.generation_length
                .with_label_values(label)
                .observe(usage.completion_tokens as f64);
            if let Some(t) = &out.timings {
                let observe = |h: &prometheus::HistogramVec, d: std::time::Duration| {
                    h.with_label_values(label).observe(d.as_secs_f64());
                };
                observe(&m.queue_time, t.queued);
                observe(&m.prefill_time, t.prefill);
                observe(&m.decode_time, t.decode);
                observe(&m.inference_time, t.prefill + t.decode);
                self.ctx.add_queue_time(t.queued);
            }
        }
    }

    fn finish_choice(&mut self, choice: usize, reason: &'static str) {
        let Some(c) = self.choices.get_mut(choice) else {
            return;
        };
        if c.finished {
            return;
        }
        c.finished = true;
        self.observation
            .push((Signal::CompletionTokens, c.tokens as f64));
        self.observation
            .push((Signal::FinishReason, finish_reason_value(reason)));
        if c.logprobs > 0 {
            self.observation
                .push((Signal::MeanLogprob, c.logprob_sum / c.logprobs as f64));
        }
        // A choice cut by the client or an engine error says nothing about
        // the outputs.
        let judged = reason != "abort" && reason != "error";
        if let Some(text) = self.json_texts.as_ref().and_then(|t| t.get(choice)) {
            if judged {
                let parsed = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
                self.observation
                    .push((Signal::OutputParses, parse_outcome_value(parsed)));
            }
        }
        let m = &self.metrics.request;
        let (model, version) = (&*self.model, &*self.version);
        m.finished
            .with_label_values(&[model, version, reason])
            .inc();
        self.ctx.add_finish_reason(reason);
        if let (Some(first), Some(last)) = (c.first_token, c.last_token) {
            if c.tokens > 1 && reason != "error" {
                let per_token =
                    last.saturating_duration_since(first).as_secs_f64() / (c.tokens - 1) as f64;
                m.time_per_output_token
                    .with_label_values(&[model, version])
                    .observe(per_token);
            }
        }
    }

    /// Every output has arrived: the request's time ends now, not when the
    /// client has read the rest of the response.
    pub fn on_end(&mut self) {
        self.ctx.finish(Instant::now());
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        // Choices still open were cut short: the client left, or the request
        // timed out.
        for c in 0..self.choices.len() {
            self.finish_choice(c, "abort");
        }
        self.ctx.finish(Instant::now());
        self.drift
            .observe(&self.model, self.version_number, &self.observation);
        if let Some(r) = self.admission.reservation.as_mut() {
            r.settle(self.prompt_tokens + self.generated);
        }
        // The caller may open another stream from now on.
        self.admission.slot.take();
    }
}
