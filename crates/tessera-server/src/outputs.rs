//! Submitting a request's prompts to the engine and reading their outputs
//! back as one sequence of per-choice updates.
//!
//! A completions request with several prompts is one engine request per
//! prompt; choice `i * n + j` is sample `j` of prompt `i`, as in OpenAI's API.
//! Dropping [`Outputs`] (the client went away) drops every engine stream, which
//! aborts their requests and frees their KV blocks.

use std::future::poll_fn;
use std::task::Poll;

use tessera_engine::engine::OutputStream;
use tessera_engine::request::{
    FinishReason, Priority, Request, RequestOutput, StopReason, TokenLogprob,
};
use tessera_engine::SamplingParams;

use crate::error::ApiError;
use crate::openai::UsageBody;
use crate::registry::ServedModel;

/// The merged outputs of a request's engine streams.
pub struct Outputs {
    streams: Vec<Option<OutputStream>>,
    n: usize,
    /// Where the next poll starts, so no stream starves the others.
    next: usize,
}

/// Submits one engine request per prompt. If one is refused, the ones already
/// submitted are aborted (their streams are dropped) and the error returned.
pub fn submit(
    model: &ServedModel,
    prompts: Vec<Vec<u32>>,
    params: &SamplingParams,
    priority: Priority,
) -> Result<Outputs, ApiError> {
    let mut streams = Vec::with_capacity(prompts.len());
    for prompt in prompts {
        let stream = model.engine.submit(Request {
            prompt_token_ids: prompt,
            params: params.clone(),
            priority,
        })?;
        streams.push(Some(stream));
    }
    Ok(Outputs {
        streams,
        n: params.n,
        next: 0,
    })
}

impl Outputs {
    /// Number of choices in the response.
    pub fn num_choices(&self) -> usize {
        self.streams.len() * self.n
    }

    /// The next update of any choice, with the choice's index; `None` once
    /// every stream has ended.
    pub async fn next(&mut self) -> Option<(usize, RequestOutput)> {
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
    while let Some((index, out)) = outputs.next().await {
        if let Some(error) = &out.error {
            return Err(ApiError::internal(format!("generation failed: {error}")));
        }
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
