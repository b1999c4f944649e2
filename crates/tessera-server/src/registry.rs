//! The models a server serves: [`ServedModel`] is one loaded version (its
//! engine and text side), and the [`ModelManager`] of the manager crate
//! holds them all, routes each request's `model` to one, and loads, drains
//! and unloads them. [`route`] is how a handler gets its model, loading it
//! first when it is in the repository but not loaded (autoload).

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use tessera_engine::engine::EngineHandle;
use tessera_manager::{KeepAlive, ResolveError, Servable};

use crate::context::RequestContext;
use crate::error::ApiError;
use crate::state::AppState;
use crate::text::TextModel;

/// Every model the server knows, as the manager crate keeps them.
pub type ModelManager = tessera_manager::ModelManager<ServedModel>;

/// A request's route: the version that answers and a shadow copy's.
pub type Route = tessera_manager::Route<ServedModel>;

/// The response header naming the version that answered.
pub const VERSION_HEADER: &str = "x-tessera-model-version";

/// The request header that keeps a client on one version of a weighted alias
/// (beside the body's `user`).
pub const SESSION_HEADER: &str = "x-session-id";

/// One loaded model version: its engine and its text side.
pub struct ServedModel {
    /// The model's name (without version or alias).
    pub name: String,
    /// The version.
    pub version: u64,
    /// The engine running it.
    pub engine: EngineHandle,
    /// Its tokenizer and chat template.
    pub text: Arc<dyn TextModel>,
    /// Unix time it was loaded (OpenAI's `created`).
    pub created: u64,
    /// Identifies the serving configuration in responses (`system_fingerprint`).
    pub fingerprint: String,
    /// Set for an embedding model: it serves `/v1/embeddings` and no text.
    pub embedding: Option<EmbeddingInfo>,
}

/// What the embeddings endpoint needs to know of an embedding model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingInfo {
    /// Length of its vectors.
    pub dimensions: usize,
    /// Whether its vectors are unit length (shortened ones are rescaled).
    pub normalized: bool,
    /// Whether it was trained for shortened vectors (Matryoshka), which is
    /// what a request's `dimensions` needs.
    pub matryoshka: bool,
}

impl ServedModel {
    /// Version `version` of `name` over `engine`, loaded now.
    pub fn new(
        name: impl Into<String>,
        version: u64,
        engine: EngineHandle,
        text: Arc<dyn TextModel>,
    ) -> Self {
        let fingerprint = format!("fp_tessera_{}", env!("CARGO_PKG_VERSION").replace('.', "_"));
        Self {
            name: name.into(),
            version,
            engine,
            text,
            created: crate::ids::unix_now(),
            fingerprint,
            embedding: None,
        }
    }

    /// Marks the model as an embedding model.
    pub fn with_embedding(mut self, info: EmbeddingInfo) -> Self {
        self.embedding = Some(info);
        self
    }

    /// A 400 for a text-generation endpoint when this is an embedding model.
    pub fn require_generative(&self, endpoint: &str) -> Result<(), ApiError> {
        match self.embedding {
            None => Ok(()),
            Some(_) => Err(ApiError::invalid_param(
                "model",
                format!(
                    "The model `{}` is an embedding model: it does not serve {endpoint}; \
                     use /v1/embeddings",
                    self.name
                ),
            )),
        }
    }

    /// Longest sequence (prompt plus output) a request may reach.
    pub fn max_len(&self) -> usize {
        self.engine.max_len()
    }
}

impl Servable for ServedModel {
    fn engine(&self) -> &EngineHandle {
        &self.engine
    }
}

/// What a generation request says about where it goes.
#[derive(Debug, Clone, Default)]
pub struct RouteRequest<'a> {
    /// The `model` field.
    pub model: Option<&'a str>,
    /// The body's `user`, which keeps a client on one version of a weighted alias.
    pub user: Option<&'a str>,
    /// The request's `keep_alive`.
    pub keep_alive: Option<KeepAlive>,
}

/// The model version for a request. A version that is in the repository but
/// not loaded is loaded first (unless `--no-autoload`), bounded by the
/// request's deadline; 503 while the server has not finished its first
/// loads, 404 for an unknown model, version or alias.
pub async fn route(
    state: &AppState,
    ctx: &RequestContext,
    headers: &HeaderMap,
    request: RouteRequest<'_>,
) -> Result<Route, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::not_ready());
    }
    let session = headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .or(request.user);
    let models = &state.models;
    let route = match models.resolve(request.model, session) {
        Err(ResolveError::NotLoaded { name, version }) => {
            if !models.settings().autoload {
                return Err(ApiError::unavailable(format!(
                    "The model `{name}` version {version} is not loaded and autoload is off \
                     (--no-autoload): load it with POST /v2/repository/models/{name}/load"
                )));
            }
            let wait = models
                .load(&name, Some(version))
                .map_err(resolve_error)?
                .wait();
            let loaded = match ctx.deadline {
                Some(at) => tokio::time::timeout_at(at.into(), wait)
                    .await
                    .map_err(|_| ApiError::timeout(at - ctx.received))?,
                None => wait.await,
            };
            loaded.map_err(|e| {
                ApiError::unavailable(format!("The model `{name}` could not be loaded: {e}"))
            })?;
            models
                .resolve(request.model, session)
                .map_err(resolve_error)?
        }
        other => other.map_err(resolve_error)?,
    };
    models.touch(&route.name, route.version, request.keep_alive);
    ctx.set_model(&route.name);
    ctx.set_version(route.version);
    Ok(route)
}

/// A resolution failure as the API says it.
pub fn resolve_error(e: ResolveError) -> ApiError {
    match e {
        ResolveError::UnknownModel(_)
        | ResolveError::UnknownVersion { .. }
        | ResolveError::UnknownAlias { .. } => ApiError::not_found(e.to_string()),
        ResolveError::NotLoaded { .. } | ResolveError::Unavailable { .. } => {
            ApiError::unavailable(e.to_string())
        }
        ResolveError::NoModels => ApiError::not_ready(),
    }
}

/// Adds the version header to a response.
pub fn with_version(mut response: Response, version: u64) -> Response {
    response
        .headers_mut()
        .insert(VERSION_HEADER, HeaderValue::from(version));
    response
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tessera_manager::{LoadTarget, Loader, ManagerSettings, ModelOptions};

    struct NoLoader;

    impl Loader<ServedModel> for NoLoader {
        fn plan(&self, _: &std::path::Path, _: &ModelOptions, _: u64) -> Result<u64, String> {
            Err("no loader in this test".into())
        }
        fn load(&self, _: &LoadTarget<'_>) -> Result<ServedModel, String> {
            Err("no loader in this test".into())
        }
    }

    /// A manager that knows no model.
    pub(crate) fn no_models() -> Arc<ModelManager> {
        ModelManager::new(
            Box::new(NoLoader),
            ManagerSettings {
                memory_budget: 0,
                max_loaded_models: None,
                keep_alive: KeepAlive::Forever,
                autoload: true,
            },
        )
    }
}
