//! `GET /metrics`: the Prometheus text exposition.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::metrics::CONTENT_TYPE;
use crate::state::AppState;

/// Every metric, the engines' read now.
pub async fn metrics(State(state): State<AppState>) -> Response {
    crate::routes::monitoring::refresh(&state);
    match state.metrics.render(&state.models) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => ApiError::internal(format!("rendering the metrics failed: {e}")).into_response(),
    }
}
