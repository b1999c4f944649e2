//! `GET /v1/models` and `GET /v1/models/{id}`: every servable id with its
//! lifecycle state.

use axum::extract::{Path, State};
use axum::Json;
use tessera_manager::{ServableId, Target, VersionStatus};

use crate::error::ApiError;
use crate::openai::models::{ModelCard, ModelList};
use crate::state::AppState;

fn card(id: ServableId, versions: &[VersionStatus]) -> ModelCard {
    let version = id.target.primary();
    let status = versions
        .iter()
        .find(|s| s.name == id.name && s.version == version);
    let is_alias = !matches!(&id.target, Target::Version { .. }) || !id.id.contains(':');
    ModelCard {
        object: "model",
        created: status.and_then(|s| s.loaded_at).unwrap_or(0),
        owned_by: "tessera",
        max_model_len: status.and_then(|s| s.max_model_len),
        status: status.map_or("unavailable", |s| s.state.as_str()),
        version,
        target: is_alias.then_some(id.target),
        resident_bytes: status.map_or(0, |s| s.resident_bytes),
        reason: status.and_then(|s| s.reason.clone()),
        id: id.id,
    }
}

fn cards(state: &AppState) -> Vec<ModelCard> {
    let versions = state.models.versions();
    state
        .models
        .servable_ids()
        .into_iter()
        .map(|id| card(id, &versions))
        .collect()
}

/// Every servable id.
pub async fn list(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: cards(&state),
    })
}

/// One id; ids may contain `/` (hub repo ids).
pub async fn retrieve(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    cards(&state)
        .into_iter()
        .find(|c| c.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::model_not_found(&id))
}
