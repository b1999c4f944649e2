//! Submitting a request's prompts to the engine and reading their outputs
//! back as one sequence of per-choice updates.
//!
//! A completions request with several prompts is one engine request per
//! prompt; choice `i * n + j` is sample `j` of prompt `i`, as in OpenAI's API.
//! Dropping [`Outputs`] (the client went away) drops every engine stream, which
//! aborts their requests and frees their KV blocks.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tessera_engine::engine::OutputStream;
use tessera_engine::request::{
    FinishReason, Priority, Request, RequestOutput, StopReason, TokenLogprob,
};
use tessera_engine::SamplingParams;

use crate::context::RequestContext;
use crate::error::ApiError;
use crate::openai::UsageBody;
use crate::registry::{Route, ServedModel};
use crate::state::AppState;
use crate::tracker::{Admission, Tracker};

/// The merged outputs of a request's engine streams.
pub struct Outputs {
    streams: Vec<Option<OutputStream>>,
    n: usize,
    /// Where the next poll starts, so no stream starves the others.
    next: usize,
    tracker: Tracker,
    /// When the request must be over (`--request-timeout`), and that limit.
    deadline: Option<(tokio::time::Instant, Duration)>,
}

/// What to submit for one HTTP request.
pub struct Submission {
    /// The tokenized prompts: one engine request each.
    pub prompts: Vec<Vec<u32>>,
    /// Their sampling parameters (`max_tokens` decided).
    pub params: SamplingParams,
    /// Their scheduling class.
    pub priority: Priority,
    /// Whether the response streams (streams count against a per-key limit).
    pub streaming: bool,
    /// The request field holding the prompt, for errors (`prompt`, `messages`).
    pub prompt_param: &'static str,
    /// Whether the output was asked to be JSON (watched by the drift monitor).
    pub json_output: bool,
}

/// Checks the server's limits (prompt length, open streams, token rate), then
/// submits one engine request per prompt to the route's model (and a copy to
/// its mirror, if it has one). If one is refused, the ones already
/// submitted are aborted (their streams are dropped), the limits given back,
/// and the error returned.
pub fn submit(
    state: &AppState,
    ctx: &Arc<RequestContext>,
    route: &Route,
    sub: Submission,
) -> Result<Outputs, ApiError> {
    let model = &route.model;
    let limits = &state.config.limits;
    if let Some(max) = limits.max_prompt_tokens {
        if let Some(p) = sub.prompts.iter().find(|p| p.len() > max) {
            return Err(ApiError::prompt_too_long(sub.prompt_param, p.len(), max));
        }
    }
    let slot = if sub.streaming {
        state
            .streams
            .acquire(ctx.caller)
            .map_err(ApiError::too_many_streams)?
    } else {
        None
    };
    let n = sub.params.n;
    let prompt_total: u64 = sub.prompts.iter().map(|p| p.len() as u64).sum();
    let cost = (sub.prompts.len() as u64)
        .saturating_mul(n as u64)
        .saturating_mul(sub.params.max_tokens as u64)
        .saturating_add(prompt_total);
    let reservation = state
        .limiter
        .reserve_tokens(ctx.caller, cost)
        .map_err(|l| ApiError::rate_limited(&l))?;
    let prompt_lens: Vec<usize> = sub.prompts.iter().map(Vec::len).collect();
    if let Some((_, shadow)) = &route.mirror {
        mirror(state, shadow, &sub);
    }
    let mut streams = Vec::with_capacity(sub.prompts.len());
    for prompt in sub.prompts {
        let stream = model.engine.submit(Request {
            prompt_token_ids: prompt,
            params: sub.params.clone(),
            priority: if ctx.is_batch() {
                Priority::Batch
            } else {
                sub.priority
            },
        })?;
        streams.push(Some(stream));
    }
    let mut tracker = Tracker::new(
        ctx.clone(),
        state,
        &model.name,
        model.version,
        &prompt_lens,
        n,
        Admission { reservation, slot },
    );
    if sub.json_output {
        tracker.expect_json();
    }
    let deadline = ctx
        .deadline
        .zip(limits.request_timeout)
        .map(|(at, limit)| (tokio::time::Instant::from_std(at), limit));
    Ok(Outputs {
        streams,
        n,
        next: 0,
        tracker,
        deadline,
    })
}

/// Sends a copy of `sub` to a shadow version and reads its answers on a task
/// of their own, discarding them: the client never sees them, and a shadow
/// that refuses or fails changes nothing for the request (it is counted).
fn mirror(state: &AppState, shadow: &ServedModel, sub: &Submission) {
    for prompt in &sub.prompts {
        let submitted = shadow.engine.submit(Request {
            prompt_token_ids: prompt.clone(),
            params: sub.params.clone(),
            // Shadow traffic never competes with what clients wait for.
            priority: Priority::Batch,
        });
        let ok = submitted.is_ok();
        state.metrics.mirrored(&shadow.name, shadow.version, ok);
        if let Ok(mut stream) = submitted {
            tokio::spawn(async move { while stream.next().await.is_some() {} });
        }
    }
}

impl Outputs {
    /// Number of choices in the response.
    pub fn num_choices(&self) -> usize {
        self.streams.len() * self.n
    }

    /// The next update of any choice, with the choice's index; `None` once
    /// every stream has ended. An engine failure, or the request timeout
    /// passing (which aborts every stream), is an error.
    pub async fn next(&mut self) -> Option<Result<(usize, RequestOutput), ApiError>> {
        let polled = match self.deadline {
            None => self.poll_streams().await,
            Some((at, limit)) => match tokio::time::timeout_at(at, self.poll_streams()).await {
                Ok(polled) => polled,
                Err(_) => {
                    self.streams.clear();
                    self.deadline = None;
                    return Some(Err(ApiError::timeout(limit)));
                }
            },
        };
        let Some((index, out)) = polled else {
            self.tracker.on_end();
            return None;
        };
        self.tracker.on_output(index, &out);
        if let Some(error) = &out.error {
            return Some(Err(ApiError::internal(format!(
                "generation failed: {error}"
            ))));
        }
        Some(Ok((index, out)))
    }

    async fn poll_streams(&mut self) -> Option<(usize, RequestOutput)> {
        poll_fn(|cx| {
            let count = self.streams.len();
            let mut open = false;
            for k in 0..count {
                let i = (self.next + k) % count;
                let Some(stream) = self.streams[i].as_mut() else {
                    continue;
                };
                match stream.poll_next(cx) {
                    Poll::Ready(Some(out)) => {
                        self.next = (i + 1) % count;
                        return Poll::Ready(Some((i * self.n + out.index, out)));
                    }
                    Poll::Ready(None) => self.streams[i] = None,
                    Poll::Pending => open = true,
                }
            }
            if open {
                Poll::Pending
            } else {
                Poll::Ready(None)
            }
        })
        .await
    }
}

/// The logprobs a client sees: the end-of-sequence or stop token that ended a
/// sample is not part of its text, so (as in OpenAI's API) it has no entry.
pub fn visible_logprobs(out: &RequestOutput) -> &[TokenLogprob] {
    let lp = &out.logprobs;
    match (&out.finish_reason, &out.stop_reason, lp.last()) {
        (Some(FinishReason::Stop), Some(StopReason::Token(t)), Some(last)) if last.token == *t => {
            &lp[..lp.len() - 1]
        }
        _ => lp,
    }
}

/// Everything one choice produced.
#[derive(Debug, Default, Clone)]
pub struct Choice {
    pub text: String,
    pub logprobs: Vec<TokenLogprob>,
    pub finish_reason: Option<FinishReason>,
}

/// Reads every output to the end (for a non-streamed response).
pub async fn collect(mut outputs: Outputs) -> Result<(Vec<Choice>, UsageBody), ApiError> {
    let mut choices = vec![Choice::default(); outputs.num_choices()];
    let mut usage = UsageBody::default();
    while let Some(item) = outputs.next().await {
        let (index, out) = item?;
        let Some(choice) = choices.get_mut(index) else {
            continue;
        };
        choice.logprobs.extend_from_slice(visible_logprobs(&out));
        choice.text.push_str(&out.text);
        if out.finish_reason.is_some() {
            choice.finish_reason = out.finish_reason;
        }
        if let Some(u) = &out.usage {
            usage.add(u);
        }
    }
    Ok((choices, usage))
}

/// OpenAI's name for why a choice ended.
pub fn finish_str(reason: Option<FinishReason>) -> Option<&'static str> {
    reason.map(FinishReason::as_str)
}
