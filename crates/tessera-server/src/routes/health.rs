//! `GET /health` (the process is up), `GET /ready` (the start-up loads are
//! done) and Triton's per-model readiness.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::registry::resolve_error;
use crate::state::AppState;

/// Liveness: answers as soon as the server listens.
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: 503 until the models to load at start-up are loaded.
pub async fn ready(State(state): State<AppState>) -> Result<(StatusCode, Json<Value>), ApiError> {
    if state.is_ready() {
        Ok((StatusCode::OK, Json(json!({"status": "ready"}))))
    } else {
        Err(ApiError::not_ready())
    }
}

/// `GET /v2/models/{name}/ready` (Triton's per-model readiness): 200 when
/// `name` (or `name:3`, `name@alias`) routes to a ready version, else the
/// reason (404 unknown, 503 not ready).
pub async fn model_ready(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let route = state
        .models
        .resolve(Some(&name), None)
        .map_err(resolve_error)?;
    Ok(Json(
        json!({"name": route.name, "version": route.version, "ready": true}),
    ))
}

/// `GET /v2/models/{name}/versions/{version}/ready`.
pub async fn version_ready(
    state: State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    model_ready(state, Path(format!("{name}:{version}"))).await
}
