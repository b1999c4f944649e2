//! The models a server holds, looked up by the request's `model` field.
//!
//! One model today; the registry holds any number so that versioned rollouts
//! can serve several side by side. Readiness is the registry's too: until the
//! loader says it is done, generation requests get 503.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use tessera_engine::engine::EngineHandle;

use crate::error::ApiError;
use crate::text::TextModel;

/// One model being served: its engine and its text side.
pub struct ServedModel {
    /// The name clients put in `model`.
    pub name: String,
    /// The engine running it.
    pub engine: EngineHandle,
    /// Its tokenizer and chat template.
    pub text: Arc<dyn TextModel>,
    /// Unix time it was loaded (OpenAI's `created`).
    pub created: u64,
    /// Identifies the serving configuration in responses (`system_fingerprint`).
    pub fingerprint: String,
}

impl ServedModel {
    /// A model named `name` over `engine`, loaded now.
    pub fn new(name: impl Into<String>, engine: EngineHandle, text: Arc<dyn TextModel>) -> Self {
        let name = name.into();
        let fingerprint = format!("fp_tessera_{}", env!("CARGO_PKG_VERSION").replace('.', "_"));
        Self {
            name,
            engine,
            text,
            created: crate::ids::unix_now(),
            fingerprint,
        }
    }

    /// Longest sequence (prompt plus output) a request may reach.
    pub fn max_len(&self) -> usize {
        self.engine.max_len()
    }
}

/// A second model with a name already taken.
#[derive(Debug, thiserror::Error)]
#[error("a model named '{0}' is already registered")]
pub struct DuplicateModel(pub String);

/// The served models, by name; the first registered is the default.
#[derive(Default)]
pub struct ModelRegistry {
    models: RwLock<Vec<Arc<ServedModel>>>,
    ready: AtomicBool,
}

impl ModelRegistry {
    /// An empty registry, not ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a model. Names are unique.
    pub fn add(&self, model: ServedModel) -> Result<(), DuplicateModel> {
        let mut models = self.models.write().unwrap_or_else(PoisonError::into_inner);
        if models.iter().any(|m| m.name == model.name) {
            return Err(DuplicateModel(model.name));
        }
        models.push(Arc::new(model));
        Ok(())
    }

    /// Marks loading as finished (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether every model is loaded and requests are served.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Every served model, default first.
    pub fn list(&self) -> Vec<Arc<ServedModel>> {
        self.models
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The model a request names (the default when it names none): 503 while
    /// loading, 404 for an unknown name.
    pub fn resolve(&self, name: Option<&str>) -> Result<Arc<ServedModel>, ApiError> {
        if !self.is_ready() {
            return Err(ApiError::not_ready());
        }
        let models = self.models.read().unwrap_or_else(PoisonError::into_inner);
        let found = match name {
            None => models.first(),
            Some(name) => models.iter().find(|m| m.name == name),
        };
        found
            .cloned()
            .ok_or_else(|| ApiError::model_not_found(name.unwrap_or("")))
    }

    /// A loaded model by name, for `GET /v1/models/{id}` (404 otherwise).
    pub fn get(&self, name: &str) -> Result<Arc<ServedModel>, ApiError> {
        self.models
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|m| m.name == name)
            .cloned()
            .ok_or_else(|| ApiError::model_not_found(name))
    }
}
