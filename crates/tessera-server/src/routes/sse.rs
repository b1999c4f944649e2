//! Server-sent events: `data: {json}` per chunk and `data: [DONE]` at the end.

use axum::response::sse::Event;
use serde::Serialize;

use crate::error::ApiError;

/// A `data:` event holding `value` as JSON.
pub fn data_event(value: &impl Serialize) -> Event {
    match serde_json::to_string(value) {
        Ok(json) => Event::default().data(json),
        Err(e) => error_event(&ApiError::internal(format!("serializing a chunk: {e}"))),
    }
}

/// An OpenAI-shaped error inside a stream (the status line was already sent).
pub fn error_event(error: &ApiError) -> Event {
    tracing::error!("{}", error.message);
    Event::default().data(error.to_json())
}

/// The stream's terminator.
pub fn done_event() -> Event {
    Event::default().data("[DONE]")
}
