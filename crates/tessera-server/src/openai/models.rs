//! `/v1/models`.

use serde::Serialize;
use tessera_manager::Target;

/// One servable id: a model (`name`), a version (`name:3`) or an alias
/// (`name@prod`), with OpenAI's fields and its lifecycle.
#[derive(Debug, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// Longest sequence (prompt plus completion), as vLLM reports it; null
    /// while the version is not loaded.
    pub max_model_len: Option<usize>,
    /// `loading | ready | draining | unloading | unavailable | failed`.
    pub status: &'static str,
    /// The version the id routes to (for a weighted alias, its heaviest).
    pub version: u64,
    /// What an alias or a bare name points at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// Bytes of the memory budget the version holds (weights and KV cache).
    pub resident_bytes: u64,
    /// Why the version's last load failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The list.
#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}
