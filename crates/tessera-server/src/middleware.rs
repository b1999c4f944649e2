//! The middleware around every route: request id, access (API keys, request
//! rate), the request's context, its timeout, the HTTP status metric,
//! with `--log-requests` body logging, and with `--payload-log` payload
//! events.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::access;
use crate::body_log;
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::server::ClientAddr;
use crate::state::AppState;

/// The request id header, read and echoed.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-chosen request id kept (longer ones are replaced).
const MAX_REQUEST_ID: usize = 128;

/// The client's id when it is a sensible token, else a new one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            (1..=MAX_REQUEST_ID).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
        })
        .map_or_else(|| crate::ids::new_id(""), str::to_string)
}

/// Whether a request comes with a body (which an early answer leaves unread).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|len| len.trim() != "0")
}

/// The middleware.
pub async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = request_id(req.headers());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let addr: Option<IpAddr> = req
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|c| c.0 .0.ip());
    let checked = access::check(&state, req.uri().path(), req.headers(), addr);
    let rejected = checked.is_err();
    let body_sent = has_body(req.headers());
    let caller = checked.as_ref().map_or(access::anonymous(addr), |c| *c);
    let timeout = state.config.limits.request_timeout;
    let ctx = Arc::new(RequestContext::new(
        id.clone(),
        caller,
        req.method().as_str(),
        &route,
        timeout,
    ));
    let log_bodies = state.config.log_requests;
    let payload = crate::monitoring::payload::hook::wants(&state, &route);
    let mut payload_body = None;
    let mut response = match checked {
        Err(e) => e.into_response(),
        Ok(_) => {
            req.extensions_mut().insert(ctx.clone());
            let req = if log_bodies {
                body_log::request(&state, &ctx, req).await
            } else {
                Ok(req)
            };
            let req = match req {
                Ok(req) if payload => crate::monitoring::payload::hook::request(&state, req)
                    .await
                    .map(|(req, body)| {
                        payload_body = Some(body);
                        req
                    }),
                other => other,
            };
            match (req, timeout) {
                (Err(e), _) => e.into_response(),
                (Ok(req), None) => next.run(req).await,
                (Ok(req), Some(limit)) => {
                    // Covers whole responses; a stream's deadline is its
                    // own (the body outlives this call).
                    match tokio::time::timeout(limit, next.run(req)).await {
                        Ok(response) => response,
                        Err(_) => ApiError::timeout(limit).into_response(),
                    }
                }
            }
        }
    };
    let status = response.status().as_u16();
    ctx.set_status(status);
    state
        .metrics
        .http_requests
        .with_label_values(&[
            ctx.model().as_deref().unwrap_or(""),
            route.as_str(),
            &status.to_string(),
        ])
        .inc();
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    // Answered before its body was read (refused, too large, timed out): hyper
    // will close the connection rather than read the rest, so say so, or a
    // client may send its next request on a connection about to close.
    let unread = rejected
        || matches!(
            response.status(),
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::GATEWAY_TIMEOUT
        );
    if unread && body_sent {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(body) = payload_body {
        response =
            crate::monitoring::payload::hook::response(&state, ctx.clone(), body, response).await;
    }
    if log_bodies {
        response = body_log::response(&state, ctx, response).await;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_when_sensible() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
        let long = "x".repeat(MAX_REQUEST_ID + 1);
        h.insert(REQUEST_ID, HeaderValue::from_str(&long).expect("value"));
        assert_eq!(request_id(&h).len(), 24);
        assert_eq!(request_id(&HeaderMap::new()).len(), 24);
    }
}
