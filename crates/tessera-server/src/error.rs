//! Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`
//! with the HTTP status the OpenAI SDKs map to their typed exceptions
//! (400 `BadRequestError`, 404 `NotFoundError`, 429 `RateLimitError`, ...).

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tessera_engine::engine::SubmitError;
use tessera_engine::SamplingError;

use crate::auth::AuthFailure;
use crate::rate_limit::Limited;
use crate::streams::TooManyStreams;

/// Seconds a client is told to wait after a 429 that has no better estimate.
const RETRY_AFTER_SECS: u64 = 1;

/// An API error, turned into an OpenAI-shaped JSON response.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
    /// OpenAI's error class (`invalid_request_error`, ...).
    pub kind: &'static str,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// A machine-readable code (`context_length_exceeded`, ...).
    pub code: Option<&'static str>,
    /// Seconds for `Retry-After` on a 429 (default 1).
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400: the request is malformed or a value is out of range.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400 about one field.
    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::bad_request(message).with_param(param)
    }

    /// 404: no such model.
    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model `{model}` does not exist or you do not have access to it."),
        )
        .with_param("model")
        .with_code("model_not_found")
    }

    /// 404 about the `model` field: no such model, version or alias.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
            .with_param("model")
            .with_code("model_not_found")
    }

    /// 503: the model exists but cannot serve now (loading, draining, failed,
    /// not loaded).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            message,
        )
        .with_code("model_unavailable")
    }

    /// 404: no such route.
    pub fn route_not_found(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Invalid URL ({method} {path})"),
        )
        .with_code("unknown_url")
    }

    /// 413: the body is over the server's limit.
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("The request body is larger than this server's limit of {limit} bytes."),
        )
        .with_code("request_too_large")
    }

    /// 503: no model is loaded yet.
    pub fn not_ready() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "The model is still loading; try again shortly (GET /ready says when).",
        )
        .with_code("model_not_ready")
    }

    /// 401: no API key, or a wrong one (OpenAI's wording; the key is never echoed).
    pub fn unauthorized(failure: AuthFailure) -> Self {
        match failure {
            AuthFailure::Missing => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "You didn't provide an API key. You need to provide your API key in an \
                 Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            ),
            AuthFailure::Invalid => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "Incorrect API key provided.",
            )
            .with_code("invalid_api_key"),
        }
    }

    /// 429 when a rate limit ran out, with the wait in `Retry-After`; 400 when
    /// the request alone is over the limit (waiting would not help).
    pub fn rate_limited(l: &Limited) -> Self {
        let window = l.window.as_secs_f64();
        match l.retry_after {
            Some(wait) => Self {
                retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    format!(
                        "Rate limit reached: {} {} per {window}s for this API key. Please \
                         try again in {:.1}s.",
                        l.limit,
                        l.what,
                        wait.as_secs_f64()
                    ),
                )
                .with_code("rate_limit_exceeded")
            },
            None => Self::bad_request(format!(
                "This request needs more {} than this API key may use in {window}s ({}); \
                 reduce the prompt, max_tokens or n.",
                l.what, l.limit
            ))
            .with_param("max_tokens")
            .with_code("rate_limit_exceeded"),
        }
    }

    /// 429: the caller has its most streams open.
    pub fn too_many_streams(t: TooManyStreams) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!(
                "This API key already has {} streamed responses open, this server's limit; \
                 wait for one to finish.",
                t.max
            ),
        )
        .with_code("too_many_streams")
    }

    /// 400: a prompt over the server's `--max-prompt-tokens`.
    pub fn prompt_too_long(param: &str, len: usize, max: usize) -> Self {
        Self::invalid_param(
            param,
            format!("The prompt has {len} tokens; this server accepts at most {max}."),
        )
        .with_code("prompt_too_long")
    }

    /// 504: the request ran past the server's `--request-timeout`.
    pub fn timeout(limit: Duration) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout_error",
            format!(
                "The request took longer than this server's limit of {}s.",
                limit.as_secs_f64()
            ),
        )
        .with_code("request_timeout")
    }

    /// 500: something on our side failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// Replaces the message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// Names the field at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Sets the machine-readable code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The JSON body, also used for an error event inside an SSE stream.
    pub fn to_json(&self) -> String {
        let body = Body {
            error: Inner {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        // Serializing plain strings cannot fail; fall back to a fixed body anyway.
        serde_json::to_string(&body).unwrap_or_else(|_| {
            r#"{"error":{"message":"error","type":"server_error","param":null,"code":null}}"#
                .to_string()
        })
    }
}

impl From<SamplingError> for ApiError {
    fn from(e: SamplingError) -> Self {
        match &e {
            SamplingError::Invalid { param, .. } => {
                let param = *param;
                ApiError::invalid_param(param, e.to_string())
            }
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::QueueFull(_) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                e.to_string(),
            )
            .with_code("queue_full"),
            SubmitError::Invalid(msg) => ApiError::bad_request(msg),
            SubmitError::Sampling(s) => s.into(),
            SubmitError::Shutdown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "The engine has shut down.",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, "{}", self.message);
        } else {
            tracing::debug!(status = %self.status, "{}", self.message);
        }
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.to_json(),
        )
            .into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            let secs = self.retry_after.unwrap_or(RETRY_AFTER_SECS);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_openai_fields() {
        let e = ApiError::invalid_param("top_p", "bad").with_code("x");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"error": {"message": "bad", "type": "invalid_request_error",
                "param": "top_p", "code": "x"}})
        );
    }

    #[test]
    fn queue_full_is_429_with_retry_after() {
        let response = ApiError::from(SubmitError::QueueFull(3)).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from(1u32))
        );
    }

    #[test]
    fn rate_limits_say_how_long_to_wait() {
        let limited = |retry_after| Limited {
            what: "requests",
            limit: 2,
            window: Duration::from_secs(60),
            retry_after,
        };
        let e = ApiError::rate_limited(&limited(Some(Duration::from_millis(2100))));
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from(3u32))
        );
        let e = ApiError::rate_limited(&limited(None));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let response = ApiError::unauthorized(AuthFailure::Invalid).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
    }

    #[test]
    fn sampling_errors_name_their_param() {
        let e = ApiError::from(SamplingError::Invalid {
            param: "min_p",
            msg: "must be in [0, 1], got 2".into(),
        });
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some("min_p"));
    }
}
