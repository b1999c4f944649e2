//! Where the middleware hands payloads to the logger: the request body is
//! read (under the size limit) and put back; once the handler has answered,
//! the request event goes out with the model and version it was routed to,
//! and the response event when the whole body has passed (a stream: when it
//! ends, its chunks as a JSON array).

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::Value;

use super::{hash_content, Event, PayloadLogger, REQUEST_TYPE, RESPONSE_TYPE};
use crate::body_log::{is_event_stream, redact, secrets};
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::state::AppState;

/// Most of a streamed response kept for its event.
const MAX_STREAM: usize = 4 << 20;

/// Whether `route`'s payloads are logged.
pub(crate) fn wants(state: &AppState, route: &str) -> bool {
    state.payload.is_some() && matches!(route, "/v1/chat/completions" | "/v1/completions")
}

/// Reads the request body and puts it back.
pub(crate) async fn request(state: &AppState, req: Request) -> Result<(Request, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let limit = state.config().max_body_bytes;
    let bytes = to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::body_too_large(limit))?;
    Ok((Request::from_parts(parts, Body::from(bytes.clone())), bytes))
}

/// Sends the request's event, and the response's when its body has passed.
pub(crate) async fn response(
    state: &AppState,
    ctx: Arc<RequestContext>,
    request_body: Bytes,
    response: Response,
) -> Response {
    let Some(logger) = state.payload.clone() else {
        return response;
    };
    if !logger.sampled(&ctx.id) {
        return response;
    }
    let secrets = secrets(state);
    let request_body = body_value(&request_body, &secrets, logger.config().hash_content);
    logger.send(event(&logger, &ctx, REQUEST_TYPE, None, request_body));
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    let streamed = is_event_stream(&parts.headers);
    if streamed {
        let mut tee = StreamTee {
            buf: Vec::new(),
            logger,
            ctx,
            status,
            secrets,
        };
        let stream = body.into_data_stream().map(move |chunk| {
            if let Ok(bytes) = &chunk {
                let room = MAX_STREAM.saturating_sub(tee.buf.len());
                tee.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
            chunk
        });
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    match to_bytes(body, usize::MAX).await {
        Ok(bytes) => {
            let value = body_value(&bytes, &secrets, logger.config().hash_content);
            logger.send(event(&logger, &ctx, RESPONSE_TYPE, Some(status), value));
            Response::from_parts(parts, Body::from(bytes))
        }
        Err(e) => {
            ApiError::internal(format!("reading the response body failed: {e}")).into_response()
        }
    }
}

/// A body as JSON (text when it does not parse), credentials replaced,
/// content hashed when asked.
fn body_value(bytes: &[u8], secrets: &[String], hash: bool) -> Value {
    let text = redact(bytes, secrets);
    let mut value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if hash {
        hash_content(&mut value);
    }
    value
}

fn event(
    logger: &PayloadLogger,
    ctx: &RequestContext,
    kind: &'static str,
    status: Option<u16>,
    body: Value,
) -> Event {
    Event {
        id: ctx.id.clone(),
        kind,
        source: logger.config().source.clone(),
        time: super::time::rfc3339(SystemTime::now()),
        model: ctx.model().unwrap_or_default(),
        version: ctx.version().unwrap_or(0),
        endpoint: ctx.route().to_string(),
        status,
        body,
    }
}

/// A streamed body's copy; its event goes out when the stream is dropped
/// (ended, or the client left).
struct StreamTee {
    buf: Vec<u8>,
    logger: Arc<PayloadLogger>,
    ctx: Arc<RequestContext>,
    status: u16,
    secrets: Arc<Vec<String>>,
}

impl Drop for StreamTee {
    fn drop(&mut self) {
        let text = redact(&self.buf, &self.secrets);
        let hash = self.logger.config().hash_content;
        let chunks: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .filter(|d| *d != "[DONE]")
            .map(|d| {
                let mut v = serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.into()));
                if hash {
                    hash_content(&mut v);
                }
                v
            })
            .collect();
        let e = event(
            &self.logger,
            &self.ctx,
            RESPONSE_TYPE,
            Some(self.status),
            Value::Array(chunks),
        );
        self.logger.send(e);
    }
}
