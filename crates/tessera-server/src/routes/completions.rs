//! `POST /v1/completions`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::Value;

use crate::body::{typed, JsonObject};
use crate::compat::strip_unimplemented;
use crate::context::Ctx;
use crate::error::ApiError;
use crate::ids::new_id;
use crate::logprobs;
use crate::openai::completions::{Completion, CompletionChoice};
use crate::openai::{Header, UsageBody};
use crate::outputs::{collect, finish_str, submit, visible_logprobs, Outputs, Submission};
use crate::registry::{route, with_version};
use crate::routes::sse::{data_event, next_step, StreamStep};
use crate::sampling::{decide_max_tokens, SamplingFields, DEFAULT_COMPLETION_MAX_TOKENS};
use crate::state::AppState;
use crate::structured;
use crate::text::TextModel;

/// `prompt`: text or token ids, one or a batch.
enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatch(Vec<Vec<u32>>),
}

impl Prompt {
    /// Reads the four shapes OpenAI accepts, with a message naming them
    /// (serde's untagged enums only say that nothing matched).
    fn from_json(value: Value) -> Result<Self, ApiError> {
        let shapes = "prompt must be a string, a list of strings, a list of token ids or a \
                      list of lists of token ids";
        let wrong = || ApiError::invalid_param("prompt", shapes);
        if let Value::String(s) = value {
            return Ok(Prompt::Text(s));
        }
        let Value::Array(items) = value else {
            return Err(wrong());
        };
        let token = |v: &Value| v.as_u64().and_then(|t| u32::try_from(t).ok());
        let tokens = |items: &[Value]| items.iter().map(token).collect::<Option<Vec<u32>>>();
        let prompt = match items.first() {
            None => Prompt::Texts(Vec::new()),
            Some(Value::String(_)) => Prompt::Texts(
                items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(wrong)?,
            ),
            Some(Value::Number(_)) => Prompt::Tokens(tokens(&items).ok_or_else(wrong)?),
            Some(Value::Array(_)) => Prompt::TokenBatch(
                items
                    .iter()
                    .map(|v| v.as_array().and_then(|a| tokens(a)))
                    .collect::<Option<_>>()
                    .ok_or_else(wrong)?,
            ),
            Some(_) => return Err(wrong()),
        };
        Ok(prompt)
    }
}

/// Completions-only fields (the shared ones are in [`SamplingFields`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompletionFields {
    prompt: Value,
    echo: Option<bool>,
    logprobs: Option<usize>,
    best_of: Option<usize>,
}

/// One prompt, tokenized, and its text for `echo`.
struct PromptInput {
    tokens: Vec<u32>,
    text: String,
}

/// The handler.
pub async fn completions(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    JsonObject(mut body): JsonObject,
) -> Result<Response, ApiError> {
    let structured = structured::take(&mut body, false)?;
    strip_unimplemented(&mut body, false)?;
    let fields = SamplingFields::take(&mut body)?;
    let req: CompletionFields = typed(body)?;
    let route = route(&state, &ctx, &headers, fields.route_request()?).await?;
    let model = route.model.clone();
    model.require_generative("/v1/completions")?;
    let limits = &state.config().limits;
    let n = fields.n.unwrap_or(1);
    if let Some(best_of) = req.best_of.filter(|&b| b != n) {
        return Err(ApiError::invalid_param(
            "best_of",
            format!("best_of different from n ({best_of} vs {n}) is not supported by tessera"),
        ));
    }
    let echo = req.echo.unwrap_or(false);
    if echo && req.logprobs.is_some() {
        return Err(ApiError::invalid_param(
            "echo",
            "echo together with logprobs is not supported (prompt logprobs are not computed)",
        ));
    }
    let prompts = tokenize_prompts(&*model.text, Prompt::from_json(req.prompt)?, echo)?;
    let mut max_tokens = 0;
    for p in &prompts {
        max_tokens = max_tokens.max(decide_max_tokens(
            fields.max_tokens,
            Some(DEFAULT_COMPLETION_MAX_TOKENS),
            p.tokens.len(),
            model.max_len(),
            limits.max_output_tokens,
            "prompt",
        )?);
    }
    // A default max_tokens is capped per prompt above; one value must fit all.
    if fields.max_tokens.is_none() {
        let shortest_room = prompts
            .iter()
            .map(|p| model.max_len().saturating_sub(p.tokens.len()))
            .min()
            .unwrap_or(0);
        max_tokens = max_tokens.min(shortest_room).max(1);
    }
    let mut params = fields.to_params(max_tokens, limits.max_n)?;
    params.logprobs = req.logprobs;
    if let Some(s) = &structured {
        params.constraint = Some(s.compile(&*model.text)?);
    }
    let json_output = structured
        .as_ref()
        .is_some_and(structured::Requested::is_json);
    let include_usage = fields.include_usage()?;
    let echoes: Vec<String> = prompts.iter().map(|p| p.text.clone()).collect();
    let want_logprobs = params.logprobs.is_some();
    let outputs = submit(
        &state,
        &ctx,
        &route,
        Submission {
            prompts: prompts.into_iter().map(|p| p.tokens).collect(),
            params,
            priority: fields.priority()?,
            streaming: fields.streaming(),
            prompt_param: "prompt",
            json_output,
        },
    )?;
    let header = Header {
        id: new_id("cmpl-"),
        object: "text_completion",
        created: crate::ids::unix_now(),
        model: fields.model.clone().unwrap_or_else(|| model.name.clone()),
        system_fingerprint: model.fingerprint.clone(),
    };
    let text = model.text.clone();
    if fields.streaming() {
        let num_choices = outputs.num_choices();
        let stream = CompletionStream {
            outputs,
            header,
            text,
            include_usage,
            want_logprobs,
            echoes: echo.then_some(echoes),
            n,
            offsets: vec![0; num_choices],
            usage: UsageBody::default(),
            started: false,
            finished: false,
        };
        let sse = Sse::new(stream.into_events())
            .keep_alive(KeepAlive::default())
            .into_response();
        return Ok(with_version(sse, route.version));
    }
    let (choices, usage) = collect(outputs).await?;
    let choices = choices
        .into_iter()
        .enumerate()
        .map(|(index, c)| {
            let prefix = if echo { echoes[index / n].as_str() } else { "" };
            let mut offset = 0;
            CompletionChoice {
                index,
                logprobs: want_logprobs
                    .then(|| logprobs::completion(&*text, &c.logprobs, &mut offset)),
                text: format!("{prefix}{}", c.text),
                finish_reason: finish_str(c.finish_reason),
            }
        })
        .collect();
    let response = Json(Completion {
        header,
        choices,
        usage: Some(Some(usage)),
    })
    .into_response();
    Ok(with_version(response, route.version))
}

/// Tokenizes every prompt (text gets the model's BOS, as in OpenAI-compatible
/// servers); the echo text of token prompts is their decoding.
fn tokenize_prompts(
    text: &dyn TextModel,
    prompt: Prompt,
    echo: bool,
) -> Result<Vec<PromptInput>, ApiError> {
    let from_text = |s: String| -> Result<PromptInput, ApiError> {
        let tokens = text.encode(&s, true).map_err(ApiError::bad_request)?;
        Ok(PromptInput { tokens, text: s })
    };
    let from_tokens = |tokens: Vec<u32>| -> Result<PromptInput, ApiError> {
        let s = if echo {
            text.decode(&tokens, false)
                .map_err(|e| ApiError::invalid_param("prompt", e))?
        } else {
            String::new()
        };
        Ok(PromptInput { tokens, text: s })
    };
    let prompts = match prompt {
        Prompt::Text(s) => vec![from_text(s)?],
        Prompt::Texts(v) => v.into_iter().map(from_text).collect::<Result<_, _>>()?,
        Prompt::Tokens(t) => vec![from_tokens(t)?],
        Prompt::TokenBatch(b) => b.into_iter().map(from_tokens).collect::<Result<_, _>>()?,
    };
    if prompts.is_empty() {
        return Err(ApiError::invalid_param(
            "prompt",
            "prompt must not be empty",
        ));
    }
    if prompts.iter().any(|p| p.tokens.is_empty()) {
        return Err(ApiError::invalid_param(
            "prompt",
            "a prompt encodes to no tokens",
        ));
    }
    Ok(prompts)
}

/// The state of one streamed completion.
struct CompletionStream {
    outputs: Outputs,
    header: Header,
    text: Arc<dyn TextModel>,
    include_usage: bool,
    want_logprobs: bool,
    /// The prompts' texts, when echoed.
    echoes: Option<Vec<String>>,
    n: usize,
    /// Characters streamed so far per choice (for `text_offset`).
    offsets: Vec<usize>,
    usage: UsageBody,
    started: bool,
    finished: bool,
}

impl CompletionStream {
    fn into_events(self) -> impl Stream<Item = Result<Event, Infallible>> {
        stream::unfold(self, |mut s| async move {
            let events = s.next_events().await?;
            Some((stream::iter(events.into_iter().map(Ok)), s))
        })
        .flatten()
    }

    fn chunk(&self, choice: CompletionChoice) -> Event {
        data_event(&Completion {
            header: self.header.clone(),
            choices: vec![choice],
            usage: self.include_usage.then_some(None),
        })
    }

    async fn next_events(&mut self) -> Option<Vec<Event>> {
        if self.finished {
            return None;
        }
        if !self.started {
            self.started = true;
            if let Some(echoes) = self.echoes.take() {
                // Each choice starts with its prompt's text.
                let mut events = Vec::with_capacity(self.offsets.len());
                for index in 0..self.offsets.len() {
                    let prompt = echoes[index / self.n].clone();
                    self.offsets[index] = prompt.chars().count();
                    events.push(self.chunk(CompletionChoice {
                        index,
                        text: prompt,
                        logprobs: None,
                        finish_reason: None,
                    }));
                }
                return Some(events);
            }
        }
        let header = &self.header;
        let usage_chunk = self.include_usage.then_some(|usage| {
            data_event(&Completion {
                header: header.clone(),
                choices: Vec::new(),
                usage: Some(Some(usage)),
            })
        });
        let step = next_step(
            &mut self.outputs,
            &mut self.usage,
            &mut self.finished,
            usage_chunk,
        );
        let (index, out) = match step.await {
            StreamStep::Output(index, out) => (index, *out),
            StreamStep::Events(events) => return Some(events),
        };
        let lps = visible_logprobs(&out);
        if out.text.is_empty() && lps.is_empty() && out.finish_reason.is_none() {
            return Some(Vec::new());
        }
        let logprobs = match self.offsets.get_mut(index) {
            Some(offset) if self.want_logprobs => {
                Some(logprobs::completion(&*self.text, lps, offset))
            }
            _ => None,
        };
        Some(vec![self.chunk(CompletionChoice {
            index,
            text: out.text.clone(),
            logprobs,
            finish_reason: finish_str(out.finish_reason),
        })])
    }
}
