//! What every handler shares.

use std::sync::Arc;

use crate::registry::ModelRegistry;

/// Default limit on a request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 << 20;

/// The router's state.
#[derive(Clone)]
pub struct AppState {
    /// The served models.
    pub registry: Arc<ModelRegistry>,
    /// Largest request body accepted (larger ones get 413).
    pub max_body_bytes: usize,
}

impl AppState {
    /// State over `registry` with the default body limit.
    pub fn new(registry: Arc<ModelRegistry>) -> Self {
        Self {
            registry,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}
