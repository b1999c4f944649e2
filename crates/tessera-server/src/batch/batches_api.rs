//! `/v1/batches`: create, list, retrieve and cancel, each limited to the
//! caller's own batches. The work itself is the worker's.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Json;
use serde::Deserialize;
use serde_json::{Map, Value};
use tessera_store::{BatchStatus, NewBatch};

use super::files_api::parse_limit;
use super::{not_found, owner, page_limit, service, shapes, COMPLETION_WINDOW};
use crate::body::{typed, JsonObject, OptionalJsonObject};
use crate::error::ApiError;
use crate::state::AppState;

/// The endpoints a batch may run.
pub const ENDPOINTS: &[&str] = &["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];

/// Metadata limits (OpenAI's): keys, key length, value length.
const METADATA_PAIRS: usize = 16;
const METADATA_KEY: usize = 64;
const METADATA_VALUE: usize = 512;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBatch {
    input_file_id: String,
    endpoint: String,
    completion_window: String,
    metadata: Option<Map<String, Value>>,
}

/// `POST /v1/batches`.
pub async fn create_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let batches = service(&state)?.clone();
    let owner = owner(&state, &headers);
    let req: CreateBatch = typed(body)?;
    check_endpoint(&req.endpoint)?;
    if req.completion_window != COMPLETION_WINDOW {
        return Err(ApiError::invalid_param(
            "completion_window",
            format!(
                "completion_window must be '{COMPLETION_WINDOW}', got '{}'",
                req.completion_window
            ),
        ));
    }
    if let Some(m) = &req.metadata {
        check_metadata(m)?;
    }
    let input = req.input_file_id.clone();
    let file_owner = owner.clone();
    let file = batches
        .call(move |s| s.file(&file_owner, &input))
        .await?
        .ok_or_else(|| not_found("File", &req.input_file_id).with_param("input_file_id"))?;
    if file.purpose != "batch" {
        return Err(ApiError::invalid_param(
            "input_file_id",
            format!(
                "The file {} has purpose '{}', not 'batch'.",
                file.id, file.purpose
            ),
        ));
    }
    let window = i64::try_from(batches.config.window.as_secs()).unwrap_or(i64::MAX);
    let new = NewBatch {
        id: crate::ids::new_id("batch_"),
        owner,
        endpoint: req.endpoint,
        input_file_id: req.input_file_id,
        completion_window: req.completion_window,
        metadata: req.metadata.map(Value::Object),
        expires_at: tessera_store::unix_now().saturating_add(window),
    };
    let record = batches.call(move |s| s.create_batch(&new)).await?;
    batches.wake.notify_one();
    Ok(Json(shapes::batch(&record)))
}

/// `GET /v1/batches` (`after`, `limit`).
pub async fn list_batches(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let batches = service(&state)?;
    let owner = owner(&state, &headers);
    let query = uri.query();
    shapes::check_query(query, &["after", "limit"])?;
    let limit = page_limit(parse_limit(shapes::query_param(query, "limit"))?)?;
    let after = shapes::query_param(query, "after").map(str::to_string);
    let list = batches
        .call(move |s| s.batches(&owner, after.as_deref(), limit + 1))
        .await?;
    Ok(Json(shapes::page(&list, limit, shapes::batch)))
}

/// `GET /v1/batches/{id}`.
pub async fn retrieve_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let batches = service(&state)?;
    let owner = owner(&state, &headers);
    let key = id.clone();
    batches
        .call(move |s| s.batch(&owner, &key))
        .await?
        .map(|b| Json(shapes::batch(&b)))
        .ok_or_else(|| not_found("Batch", &id))
}

/// `POST /v1/batches/{id}/cancel`: lines already running finish, the rest
/// do not run; the finished lines are kept in the output files.
pub async fn cancel_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    OptionalJsonObject(body): OptionalJsonObject,
) -> Result<Json<Value>, ApiError> {
    if let Some(key) = body.keys().next() {
        return Err(ApiError::invalid_param(
            key.clone(),
            format!("Unknown parameter '{key}': cancel takes no body."),
        ));
    }
    let batches = service(&state)?;
    let owner = owner(&state, &headers);
    let key = id.clone();
    let record = batches
        .call(move |s| {
            let Some(b) = s.batch(&owner, &key)? else {
                return Ok(None);
            };
            s.set_batch_status(
                &key,
                &[BatchStatus::Validating, BatchStatus::InProgress],
                BatchStatus::Cancelling,
            )?;
            s.batch_by_id(&b.id)
        })
        .await?
        .ok_or_else(|| not_found("Batch", &id))?;
    if !matches!(
        record.status,
        BatchStatus::Cancelling | BatchStatus::Cancelled
    ) {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            ..ApiError::bad_request(format!(
                "Cannot cancel a batch with status '{}'.",
                record.status.as_str()
            ))
        });
    }
    if record.status == BatchStatus::Cancelling && !batches.is_current(&record.id) {
        // Queued behind another batch: nothing of it runs, so end it now.
        // (Should the worker take it up meanwhile, it finds it cancelling and
        // starts nothing; the transition to cancelled happens once.)
        super::worker::finalize(
            batches,
            &record,
            BatchStatus::Cancelling,
            BatchStatus::Cancelled,
        )
        .await
        .map_err(ApiError::internal)?;
        let key = id.clone();
        let owner = record.owner.clone();
        let ended = batches
            .call(move |s| s.batch(&owner, &key))
            .await?
            .ok_or_else(|| not_found("Batch", &id))?;
        return Ok(Json(shapes::batch(&ended)));
    }
    batches.wake.notify_one();
    Ok(Json(shapes::batch(&record)))
}

fn check_endpoint(endpoint: &str) -> Result<(), ApiError> {
    if ENDPOINTS.contains(&endpoint) {
        return Ok(());
    }
    let why = format!("'{endpoint}' is not one");
    Err(ApiError::invalid_param(
        "endpoint",
        format!("endpoint must be one of {}: {why}", ENDPOINTS.join(", ")),
    ))
}

fn check_metadata(m: &Map<String, Value>) -> Result<(), ApiError> {
    let bad = |why: String| Err(ApiError::invalid_param("metadata", why));
    if m.len() > METADATA_PAIRS {
        return bad(format!("metadata has at most {METADATA_PAIRS} keys"));
    }
    for (k, v) in m {
        if k.chars().count() > METADATA_KEY {
            return bad(format!(
                "metadata keys have at most {METADATA_KEY} characters"
            ));
        }
        match v {
            Value::String(s) if s.chars().count() <= METADATA_VALUE => {}
            Value::String(_) => {
                return bad(format!(
                    "metadata values have at most {METADATA_VALUE} characters"
                ))
            }
            _ => return bad(format!("metadata['{k}'] must be a string")),
        }
    }
    Ok(())
}
