//! `GET /v1/monitoring/drift` (every live version's signals against their
//! reference) and `GET /v1/monitoring/compare?model=NAME&a=3&b=4` (version
//! `b`'s current window against version `a`'s).

use axum::extract::State;
use axum::http::Uri;
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// Drops the versions no longer live, so reports and gauges name only
/// what serves (called before every report and scrape).
pub(crate) fn refresh(state: &AppState) {
    let live: Vec<(String, u64)> = state
        .models
        .ready()
        .into_iter()
        .map(|(name, version, _)| (name, version))
        .collect();
    state.drift.retain(&live);
}

/// Every live version's drift report.
pub async fn drift(State(state): State<AppState>) -> Json<Value> {
    refresh(&state);
    let c = state.drift.config();
    Json(json!({
        "enabled": c.enabled,
        "reference_size": c.reference_size,
        "window_size": c.window_size,
        "models": state.drift.report(),
    }))
}

/// Two versions of one model compared on every signal.
pub async fn compare(State(state): State<AppState>, uri: Uri) -> Result<Json<Value>, ApiError> {
    refresh(&state);
    let (mut model, mut a, mut b) = (None, None, None);
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value)
            .ok_or_else(|| ApiError::invalid_param(key, format!("'{key}' is not valid UTF-8")))?;
        match key {
            "model" => model = Some(value),
            "a" => a = Some(version(key, &value)?),
            "b" => b = Some(version(key, &value)?),
            _ => {
                return Err(ApiError::invalid_param(
                    key,
                    format!("unknown parameter '{key}' (expected model, a, b)"),
                ))
            }
        }
    }
    let missing = |p: &str| ApiError::invalid_param(p, format!("missing query parameter '{p}'"));
    let model = model.ok_or_else(|| missing("model"))?;
    let a = a.ok_or_else(|| missing("a"))?;
    let b = b.ok_or_else(|| missing("b"))?;
    let signals = state.drift.compare(&model, a, b).ok_or_else(|| {
        ApiError::not_found(format!(
            "no observations of '{model}' versions {a} and {b}: both must be live and have served requests"
        ))
    })?;
    Ok(Json(json!({
        "model": model,
        "a": a,
        "b": b,
        "signals": signals,
    })))
}

fn version(key: &str, value: &str) -> Result<u64, ApiError> {
    value.parse().map_err(|_| {
        ApiError::invalid_param(
            key,
            format!("'{key}' must be a version number, got '{value}'"),
        )
    })
}

/// `%XX` and `+` decoded; `None` when the bytes are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}
