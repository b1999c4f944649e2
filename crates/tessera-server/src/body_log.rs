//! `--log-requests`: request and response bodies in the log, for debugging.
//! Off by default (bodies are users' data). Credentials never reach the log:
//! `Authorization` and similar headers are replaced, and so is any configured
//! key wherever it appears in a body.

use std::sync::Arc;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use crate::context::{RequestContext, LOG_TARGET};
use crate::error::ApiError;
use crate::state::AppState;

/// Most of a streamed response kept for the log.
const MAX_LOGGED_STREAM: usize = 1 << 20;

const REDACTED: &str = "[REDACTED]";

/// Headers whose values are credentials.
fn is_secret_header(name: &str) -> bool {
    matches!(
        name,
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie" | "x-api-key" | "api-key"
    )
}

/// `name: value` pairs, credentials replaced.
fn headers_text(headers: &HeaderMap) -> String {
    headers
        .iter()
        .map(|(name, value)| {
            let value = if is_secret_header(name.as_str()) {
                REDACTED.into()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            format!("{name}: {value}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `bytes` as text, every secret replaced.
pub(crate) fn redact(bytes: &[u8], secrets: &[String]) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret.as_str(), REDACTED);
    }
    text
}

/// The API and metrics keys.
pub(crate) fn secrets(state: &AppState) -> Arc<Vec<String>> {
    let c = state.config();
    Arc::new(
        c.api_keys
            .iter()
            .chain(c.metrics_key.iter())
            .cloned()
            .collect(),
    )
}

/// Whether a response is a server-sent event stream (logged as it ends).
pub(crate) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

fn is_length_limit(e: axum::Error) -> bool {
    e.into_inner()
        .downcast_ref::<http_body_util::LengthLimitError>()
        .is_some()
}

/// Reads the body (under the size limit), logs it, and puts it back.
pub async fn request(
    state: &AppState,
    ctx: &RequestContext,
    req: Request,
) -> Result<Request, ApiError> {
    let (parts, body) = req.into_parts();
    let limit = state.config().max_body_bytes;
    let bytes = match to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(e) => {
            return Err(if is_length_limit(e) {
                ApiError::body_too_large(limit)
            } else {
                ApiError::bad_request("could not read the request body")
            })
        }
    };
    let secrets = secrets(state);
    tracing::info!(
        target: LOG_TARGET,
        request_id = %ctx.id,
        method = %parts.method,
        uri = %parts.uri,
        headers = %headers_text(&parts.headers),
        body = %redact(&bytes, &secrets),
        "request body"
    );
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Logs the response body: a whole one now, a stream as it ends.
pub async fn response(state: &AppState, ctx: Arc<RequestContext>, response: Response) -> Response {
    let secrets = secrets(state);
    let (parts, body) = response.into_parts();
    let streamed = is_event_stream(&parts.headers);
    if streamed {
        let mut tee = Tee {
            status: parts.status.as_u16(),
            buf: Vec::new(),
            truncated: false,
            ctx,
            secrets,
        };
        let stream = body.into_data_stream().map(move |chunk| {
            if let Ok(bytes) = &chunk {
                tee.push(bytes);
            }
            chunk
        });
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    match to_bytes(body, usize::MAX).await {
        Ok(bytes) => {
            log_response(&ctx, parts.status.as_u16(), &redact(&bytes, &secrets));
            Response::from_parts(parts, Body::from(bytes))
        }
        Err(e) => {
            ApiError::internal(format!("reading the response body failed: {e}")).into_response()
        }
    }
}

fn log_response(ctx: &RequestContext, status: u16, body: &str) {
    tracing::info!(
        target: LOG_TARGET,
        request_id = %ctx.id,
        status,
        body = %body,
        "response body"
    );
}

/// A copy of a streamed body, logged when the stream is dropped (ended, or
/// the client left).
struct Tee {
    status: u16,
    buf: Vec<u8>,
    truncated: bool,
    ctx: Arc<RequestContext>,
    secrets: Arc<Vec<String>>,
}

impl Tee {
    fn push(&mut self, bytes: &Bytes) {
        let room = MAX_LOGGED_STREAM.saturating_sub(self.buf.len());
        self.truncated |= bytes.len() > room;
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        let mut text = redact(&self.buf, &self.secrets);
        if self.truncated {
            text.push_str(" ... (truncated)");
        }
        log_response(&self.ctx, self.status, &text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn credentials_are_redacted() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-1"),
        );
        h.insert(header::USER_AGENT, HeaderValue::from_static("curl"));
        let text = headers_text(&h);
        assert!(
            !text.contains("sk-1") && text.contains("[REDACTED]"),
            "{text}"
        );
        assert!(text.contains("user-agent: curl"));
        let body = redact(br#"{"user": "sk-1", "x": 1}"#, &["sk-1".into()]);
        assert_eq!(body, r#"{"user": "[REDACTED]", "x": 1}"#);
    }
}
