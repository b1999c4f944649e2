//! `GET /v1/models` and `GET /v1/models/{id}`.

use axum::extract::{Path, State};
use axum::Json;

use crate::error::ApiError;
use crate::openai::models::{ModelCard, ModelList};
use crate::registry::ServedModel;
use crate::state::AppState;

fn card(m: &ServedModel) -> ModelCard {
    ModelCard {
        id: m.name.clone(),
        object: "model",
        created: m.created,
        owned_by: "tessera",
        max_model_len: m.max_len(),
    }
}

/// Every served model.
pub async fn list(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: state.registry.list().iter().map(|m| card(m)).collect(),
    })
}

/// One model; ids may contain `/` (hub repo ids).
pub async fn retrieve(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    state.registry.get(&id).map(|m| Json(card(&m)))
}
