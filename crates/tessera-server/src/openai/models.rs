//! `/v1/models`.

use serde::Serialize;

/// One model.
#[derive(Debug, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// Longest sequence (prompt plus completion), as vLLM reports it.
    pub max_model_len: usize,
}

/// The list.
#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}
