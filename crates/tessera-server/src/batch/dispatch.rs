//! Running one batch line: its body goes through the server's own
//! model routes (chat, completions, embeddings), in process, with a context that marks it batch
//! priority. So a line gets exactly what the same request online would
//! (validation, defaults, errors and all), only scheduled behind
//! interactive work.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};
use tower::ServiceExt;

use crate::auth::Caller;
use crate::context::RequestContext;
use crate::state::AppState;

/// What one line got.
#[derive(Debug, Clone, PartialEq)]
pub struct LineOutcome {
    /// The HTTP status.
    pub status_code: u16,
    /// The request id it ran under.
    pub request_id: String,
    /// The response body: the handler's JSON text, kept verbatim (parsing
    /// and printing it again could change a float's last digit).
    pub body: String,
}

impl LineOutcome {
    /// Whether it belongs in the output file (else the error file).
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status_code)
    }

    /// The output line, OpenAI's format, with the body as the handler
    /// wrote it.
    pub fn to_line(&self, custom_id: &str) -> String {
        let text = |s: &str| Value::String(s.to_string()).to_string();
        format!(
            r#"{{"id":{},"custom_id":{},"response":{{"status_code":{},"request_id":{},"body":{}}},"error":null}}"#,
            text(&crate::ids::new_id("batch_req_")),
            text(custom_id),
            self.status_code,
            text(&self.request_id),
            self.body,
        )
    }
}

/// The output line of a line that never ran (`code`: `batch_cancelled`,
/// `batch_expired`).
pub fn unrun_line(custom_id: &str, code: &str, message: &str) -> Value {
    json!({
        "id": crate::ids::new_id("batch_req_"),
        "custom_id": custom_id,
        "response": null,
        "error": {"code": code, "message": message},
    })
}

/// The model routes of a server, for lines.
#[derive(Clone)]
pub struct Dispatcher {
    router: Router,
}

impl Dispatcher {
    /// A dispatcher over `state`'s models.
    pub fn new(state: AppState) -> Self {
        Self {
            router: crate::routes::generation_routes().with_state(state),
        }
    }

    /// Runs `body` as a POST to `endpoint`.
    pub async fn run(&self, endpoint: &str, body: Map<String, Value>) -> LineOutcome {
        let request_id = crate::ids::new_id("batch_req_");
        let ctx = Arc::new(
            RequestContext::new(request_id.clone(), Caller::Unknown, "POST", endpoint, None)
                .for_batch(),
        );
        let bytes = Value::Object(body).to_string();
        let request = Request::builder()
            .method(Method::POST)
            .uri(endpoint)
            .header(header::CONTENT_TYPE, "application/json")
            .extension(ctx.clone())
            .body(Body::from(bytes));
        let request = match request {
            Ok(r) => r,
            Err(e) => return internal(request_id, &format!("building the request: {e}")),
        };
        let response = match self.router.clone().oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status_code = response.status().as_u16();
        ctx.set_status(status_code);
        let body = match response.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => return internal(request_id, &format!("reading the response: {e}")),
        };
        // The handlers answer compact JSON, kept as is; anything else (never
        // expected) is made one JSON line.
        let body = match serde_json::from_slice::<Value>(&body) {
            Ok(_) if !body.contains(&b'\n') => String::from_utf8_lossy(&body).into_owned(),
            Ok(value) => value.to_string(),
            Err(_) => Value::String(String::from_utf8_lossy(&body).into_owned()).to_string(),
        };
        LineOutcome {
            status_code,
            request_id,
            body,
        }
    }
}

/// Runs `body` as a POST to `endpoint` over `state` (a one-off dispatcher).
pub async fn dispatch(state: &AppState, endpoint: &str, body: Map<String, Value>) -> LineOutcome {
    Dispatcher::new(state.clone()).run(endpoint, body).await
}

fn internal(request_id: String, message: &str) -> LineOutcome {
    LineOutcome {
        status_code: 500,
        request_id,
        body: json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}})
            .to_string(),
    }
}
