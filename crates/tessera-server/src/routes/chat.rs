//! `POST /v1/chat/completions`.

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
use crate::openai::chat::{
    AssistantMessage, ChatChoice, ChatChunk, ChatCompletion, ChunkChoice, Delta, FunctionCall,
    FunctionDelta, ToolCall, ToolCallDelta,
};
use crate::openai::{Header, UsageBody};
use crate::outputs::{collect, finish_str, submit, visible_logprobs, Outputs, Submission};
use crate::registry::{route, with_version};
use crate::routes::sse::{data_event, next_step, StreamStep};
use crate::sampling::{decide_max_tokens, SamplingFields};
use crate::state::AppState;
use crate::structured;
use crate::text::TextModel;
use crate::tools::{self, ToolEvent, ToolStream};
use crate::{logprobs, messages};
use tessera_engine::request::FinishReason;

/// Chat-only fields (the shared ones are in [`SamplingFields`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatFields {
    messages: Vec<Value>,
    max_completion_tokens: Option<usize>,
    logprobs: Option<bool>,
    top_logprobs: Option<usize>,
}

/// The handler.
pub async fn chat_completions(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    JsonObject(mut body): JsonObject,
) -> Result<Response, ApiError> {
    let structured = structured::take(&mut body, true)?;
    let tools = tools::take(&mut body)?;
    strip_unimplemented(&mut body, true)?;
    let fields = SamplingFields::take(&mut body)?;
    let chat: ChatFields = typed(body)?;
    let route = route(&state, &ctx, &headers, fields.route_request()?).await?;
    let model = route.model.clone();
    model.require_generative("/v1/chat/completions")?;
    let limits = &state.config().limits;

    let messages = messages::normalize(&chat.messages)?;
    let syntax = tools
        .as_ref()
        .map(|_| tools::Syntax::of_model(&*model.text, &model.name));
    let rendered = match (&tools, &syntax) {
        (Some(t), Some(syntax)) if syntax.template_renders_tools => model
            .text
            .render_chat_with_tools(&tools::template_messages(messages), true, &t.raw),
        (Some(t), _) => model
            .text
            .render_chat(&tools::messages_without_template_support(messages, t), true),
        (None, _) => model
            .text
            .render_chat(&tools::template_messages(messages), true),
    };
    let prompt_text = rendered.map_err(|e| ApiError::invalid_param("messages", e))?;
    // The template writes the BOS itself where the model wants one.
    let prompt = model
        .text
        .encode(&prompt_text, false)
        .map_err(ApiError::bad_request)?;
    let max_tokens = decide_max_tokens(
        chat.max_completion_tokens.or(fields.max_tokens),
        None,
        prompt.len(),
        model.max_len(),
        limits.max_output_tokens,
        "messages",
    )?;
    let mut params = fields.to_params(max_tokens, limits.max_n)?;
    params.logprobs = match (chat.logprobs, chat.top_logprobs) {
        (Some(true), top) => Some(top.unwrap_or(0)),
        (_, None | Some(0)) => None,
        (_, Some(_)) => {
            return Err(ApiError::invalid_param(
                "top_logprobs",
                "top_logprobs requires logprobs to be true",
            ))
        }
    };
    let tool_constraint = tools
        .as_ref()
        .zip(syntax.as_ref())
        .map(|(t, syntax)| t.constraint(syntax));
    if tool_constraint.is_some() && structured.is_some() {
        return Err(ApiError::invalid_param(
            "tool_choice",
            "tools (with a tool_choice other than 'none') cannot be combined with \
             response_format or structured_outputs",
        ));
    }
    if syntax
        .as_ref()
        .is_some_and(tools::Syntax::needs_special_tokens)
    {
        // The calls open with a special token the parser must see.
        if fields.skip_special_tokens == Some(true) {
            return Err(ApiError::invalid_param(
                "skip_special_tokens",
                "this model's tool calls open with a special token, so skip_special_tokens \
                 cannot be true with tools",
            ));
        }
        params.skip_special_tokens = false;
    }
    if let Some(s) = structured.as_ref().or(tool_constraint.as_ref()) {
        params.constraint = Some(s.compile(&*model.text)?);
    }
    let json_output = structured
        .as_ref()
        .is_some_and(structured::Requested::is_json);
    let include_usage = fields.include_usage()?;
    let want_logprobs = params.logprobs.is_some();
    let outputs = submit(
        &state,
        &ctx,
        &route,
        Submission {
            prompts: vec![prompt],
            params,
            priority: fields.priority()?,
            streaming: fields.streaming(),
            prompt_param: "messages",
            json_output,
        },
    )?;
    let header = Header {
        id: new_id("chatcmpl-"),
        object: "chat.completion",
        created: crate::ids::unix_now(),
        model: fields.model.clone().unwrap_or_else(|| model.name.clone()),
        system_fingerprint: model.fingerprint.clone(),
    };
    let text = model.text.clone();
    if fields.streaming() {
        let header = Header {
            object: "chat.completion.chunk",
            ..header
        };
        let n = outputs.num_choices();
        let stream = ChatStream {
            tool_streams: syntax
                .as_ref()
                .map(|syntax| (syntax.clone(), (0..n).map(|_| syntax.stream()).collect())),
            outputs,
            header,
            text,
            include_usage,
            want_logprobs,
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
            let (content, calls) = match &syntax {
                Some(syntax) => syntax.parse(&c.text),
                None => (Some(c.text), Vec::new()),
            };
            let tool_calls = (!calls.is_empty()).then(|| {
                calls
                    .into_iter()
                    .map(|call| ToolCall {
                        id: syntax
                            .as_ref()
                            .map_or_else(|| new_id("call_"), |s| s.call_id()),
                        kind: "function",
                        function: FunctionCall {
                            name: call.name,
                            arguments: call.arguments,
                        },
                    })
                    .collect()
            });
            ChatChoice {
                index,
                logprobs: want_logprobs.then(|| logprobs::chat(&*text, &c.logprobs)),
                finish_reason: tool_finish(c.finish_reason, tool_calls.is_some()),
                message: AssistantMessage {
                    role: "assistant",
                    content,
                    refusal: None,
                    tool_calls,
                },
            }
        })
        .collect();
    let response = Json(ChatCompletion {
        header,
        choices,
        usage,
    })
    .into_response();
    Ok(with_version(response, route.version))
}

/// `tool_calls` when a choice that stopped by itself made calls.
fn tool_finish(reason: Option<FinishReason>, called: bool) -> Option<&'static str> {
    match reason {
        Some(FinishReason::Stop) if called => Some("tool_calls"),
        _ => finish_str(reason),
    }
}

/// The state of one streamed chat completion.
struct ChatStream {
    outputs: Outputs,
    /// When the request has tools: their syntax and, per choice, the call parser.
    tool_streams: Option<(tools::Syntax, Vec<ToolStream>)>,
    header: Header,
    text: Arc<dyn TextModel>,
    include_usage: bool,
    want_logprobs: bool,
    usage: UsageBody,
    started: bool,
    finished: bool,
}

impl ChatStream {
    fn into_events(self) -> impl Stream<Item = Result<Event, Infallible>> {
        stream::unfold(self, |mut s| async move {
            let events = s.next_events().await?;
            Some((stream::iter(events.into_iter().map(Ok)), s))
        })
        .flatten()
    }

    fn chunk(&self, choices: Vec<ChunkChoice>) -> Event {
        data_event(&ChatChunk {
            header: self.header.clone(),
            choices,
            usage: self.include_usage.then_some(None),
        })
    }

    /// The closing chunk of choice `index`: an empty delta and its finish reason.
    fn finish_chunk(&self, index: usize, finish_reason: Option<&'static str>) -> Event {
        self.chunk(vec![ChunkChoice {
            index,
            delta: Delta::default(),
            logprobs: None,
            finish_reason,
        }])
    }

    /// The events for the next step; `None` after `[DONE]`.
    async fn next_events(&mut self) -> Option<Vec<Event>> {
        if self.finished {
            return None;
        }
        if !self.started {
            // Every choice's first chunk carries the role, before any content.
            self.started = true;
            let n = self.outputs.num_choices();
            return Some(
                (0..n)
                    .map(|index| {
                        self.chunk(vec![ChunkChoice {
                            index,
                            delta: Delta {
                                role: Some("assistant"),
                                content: Some(String::new()),
                                tool_calls: None,
                            },
                            logprobs: None,
                            finish_reason: None,
                        }])
                    })
                    .collect(),
            );
        }
        let header = &self.header;
        let usage_chunk = self.include_usage.then_some(|usage| {
            data_event(&ChatChunk {
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
        let mut events = Vec::new();
        let tool_step = self.tool_streams.as_mut().and_then(|(syntax, parsers)| {
            let parser = parsers.get_mut(index)?;
            let mut events = parser.push(&out.text);
            if out.finish_reason.is_some() {
                events.extend(parser.finish());
            }
            Some((syntax.clone(), events, parser.num_calls() > 0))
        });
        if let Some((syntax, tool_events, called)) = tool_step {
            let mut logprobs = self.want_logprobs.then(|| logprobs::chat(&*self.text, lps));
            for e in tool_events {
                let delta = tool_delta(e, &syntax);
                events.push(self.chunk(vec![ChunkChoice {
                    index,
                    delta,
                    logprobs: logprobs.take(),
                    finish_reason: None,
                }]));
            }
            if out.finish_reason.is_some() {
                events.push(self.finish_chunk(index, tool_finish(out.finish_reason, called)));
            }
            return Some(events);
        }
        if !out.text.is_empty() || !lps.is_empty() {
            let logprobs = self.want_logprobs.then(|| logprobs::chat(&*self.text, lps));
            events.push(self.chunk(vec![ChunkChoice {
                index,
                delta: Delta {
                    role: None,
                    content: Some(out.text.clone()),
                    tool_calls: None,
                },
                logprobs,
                finish_reason: None,
            }]));
        }
        if out.finish_reason.is_some() {
            events.push(self.finish_chunk(index, finish_str(out.finish_reason)));
        }
        Some(events)
    }
}

/// A parsed piece of a reply with tools, as a chunk's delta.
fn tool_delta(event: ToolEvent, syntax: &tools::Syntax) -> Delta {
    let call = |d: ToolCallDelta| Delta {
        tool_calls: Some(vec![d]),
        ..Delta::default()
    };
    match event {
        ToolEvent::Content(text) => Delta {
            content: Some(text),
            ..Delta::default()
        },
        ToolEvent::Start { index, name } => call(ToolCallDelta {
            index,
            id: Some(syntax.call_id()),
            kind: Some("function"),
            function: FunctionDelta {
                name: Some(name),
                arguments: String::new(),
            },
        }),
        ToolEvent::Arguments { index, fragment } => call(ToolCallDelta {
            index,
            id: None,
            kind: None,
            function: FunctionDelta {
                name: None,
                arguments: fragment,
            },
        }),
    }
}
