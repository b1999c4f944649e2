//! `GET /health` (the process is up) and `GET /ready` (models are loaded).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// Liveness: answers as soon as the server listens.
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: 503 until every model is loaded.
pub async fn ready(State(state): State<AppState>) -> Result<(StatusCode, Json<Value>), ApiError> {
    if state.registry.is_ready() {
        Ok((StatusCode::OK, Json(json!({"status": "ready"}))))
    } else {
        Err(ApiError::not_ready())
    }
}
