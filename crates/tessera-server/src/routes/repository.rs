//! The management API, on Triton's model-repository paths so that its
//! tooling works: the index, load and unload, and MLflow-style aliases with
//! rollback. Behind the admin key (see `access.rs`); names and versions
//! resolve only among the repository's models, never to paths.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tessera_manager::{AliasError, Mirror, ModelState, Target};

use crate::body::{typed, OptionalJsonObject};
use crate::error::ApiError;
use crate::registry::resolve_error;
use crate::state::AppState;

/// `{"ready": true}` lists only ready versions (Triton's filter).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexRequest {
    ready: Option<bool>,
}

/// `POST /v2/repository/index`: every version with its state.
pub async fn index(
    State(state): State<AppState>,
    OptionalJsonObject(body): OptionalJsonObject,
) -> Result<Json<Value>, ApiError> {
    let req: IndexRequest = typed(body)?;
    let only_ready = req.ready.unwrap_or(false);
    let rows: Vec<Value> = state
        .models
        .versions()
        .into_iter()
        .filter(|s| !only_ready || s.state == ModelState::Ready)
        .map(|s| {
            json!({
                "name": s.name,
                "version": s.version.to_string(),
                "state": s.state.as_str().to_ascii_uppercase(),
                "reason": s.reason.unwrap_or_default(),
            })
        })
        .collect();
    Ok(Json(Value::Array(rows)))
}

/// The optional body of load and unload: `{"parameters": {"version": 4}}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionRequest {
    #[serde(default)]
    parameters: VersionParameters,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionParameters {
    version: Option<VersionNumber>,
}

/// A version as a number or, as Triton's clients send it, a string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum VersionNumber {
    Number(u64),
    Text(String),
}

impl VersionRequest {
    fn version(&self) -> Result<Option<u64>, ApiError> {
        let bad =
            || ApiError::invalid_param("parameters.version", "version must be a positive integer");
        match &self.parameters.version {
            None => Ok(None),
            Some(VersionNumber::Number(0)) => Err(bad()),
            Some(VersionNumber::Number(v)) => Ok(Some(*v)),
            Some(VersionNumber::Text(t)) => tessera_manager::model_ref::parse_version(t)
                .map(Some)
                .ok_or_else(bad),
        }
    }
}

/// `POST /v2/repository/models/{name}/load`: loads and warms the version
/// (none: those the policy serves), then it is servable. Idempotent;
/// concurrent loads of one version are one load.
pub async fn load(
    State(state): State<AppState>,
    Path(name): Path<String>,
    OptionalJsonObject(body): OptionalJsonObject,
) -> Result<Json<Value>, ApiError> {
    let version = typed::<VersionRequest>(body)?.version()?;
    let wait = state.models.load(&name, version).map_err(resolve_error)?;
    let versions = wait.wait().await.map_err(|e| load_failed(&name, &e))?;
    Ok(Json(
        json!({"name": name, "versions": versions, "state": "READY"}),
    ))
}

/// `POST /v2/repository/models/{name}/unload`: stops routing new requests
/// to the version (none: every loaded one), lets those in flight finish,
/// then frees its memory.
pub async fn unload(
    State(state): State<AppState>,
    Path(name): Path<String>,
    OptionalJsonObject(body): OptionalJsonObject,
) -> Result<Json<Value>, ApiError> {
    let version = typed::<VersionRequest>(body)?.version()?;
    let versions = state.models.unload(&name, version).map_err(resolve_error)?;
    Ok(Json(
        json!({"name": name, "versions": versions, "state": "DRAINING"}),
    ))
}

/// The body of `PUT .../aliases/{alias}`: `{"version": 4}` or
/// `{"versions": [{"version": 3, "weight": 90}, ...]}`, and an optional
/// `mirror: {"version", "percent"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AliasRequest {
    version: Option<u64>,
    versions: Option<Vec<tessera_manager::WeightedVersion>>,
    mirror: Option<Mirror>,
}

/// `PUT /v2/repository/models/{name}/aliases/{alias}`: loads and warms the
/// target, then moves the alias at once (the old target becomes
/// `{alias}.previous`).
pub async fn put_alias(
    State(state): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
    OptionalJsonObject(body): OptionalJsonObject,
) -> Result<Json<Value>, ApiError> {
    let req: AliasRequest = typed(body)?;
    let target = match (req.version, req.versions) {
        (Some(version), None) => Target::version(version),
        (None, Some(versions)) => Target::Weighted { versions },
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of 'version' and 'versions'",
            ))
        }
    };
    state
        .models
        .set_alias(&name, &alias, target.clone(), req.mirror)
        .await
        .map_err(|e| alias_error(&name, e))?;
    Ok(Json(
        json!({"name": name, "alias": alias, "target": target, "mirror": req.mirror}),
    ))
}

/// `DELETE /v2/repository/models/{name}/aliases/{alias}`.
pub async fn delete_alias(
    State(state): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    state
        .models
        .delete_alias(&name, &alias)
        .map_err(|e| alias_error(&name, e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v2/repository/models/{name}/aliases/{alias}/rollback`: back to
/// the previous target (loaded and warmed first).
pub async fn rollback_alias(
    State(state): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let target = state
        .models
        .rollback_alias(&name, &alias)
        .await
        .map_err(|e| alias_error(&name, e))?;
    Ok(Json(
        json!({"name": name, "alias": alias, "target": target}),
    ))
}

fn alias_error(name: &str, e: AliasError) -> ApiError {
    match e {
        AliasError::NotFound(e) => resolve_error(e),
        AliasError::Invalid(message) => ApiError::bad_request(message),
        AliasError::LoadFailed(message) => load_failed(name, &message),
    }
}

/// 500: a load failed; what was serving still serves.
fn load_failed(name: &str, reason: &str) -> ApiError {
    ApiError::internal(format!("loading `{name}` failed: {reason}")).with_code("model_load_failed")
}
