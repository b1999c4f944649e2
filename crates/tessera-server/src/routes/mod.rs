//! The HTTP routes.

mod chat;
mod completions;
mod embeddings;
mod health;
mod metrics;
mod models;
pub(crate) mod monitoring;
mod repository;
pub(crate) mod sse;
mod tokenize;

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::routing::{get, post, put};

use crate::batch;
use axum::Router;

use crate::error::ApiError;
use crate::state::AppState;

/// The router over `state`: the OpenAI API, tokenization, health, metrics;
/// every route behind the middleware (request id, access, timeout, metrics,
/// logs), and CORS outermost when enabled so preflights need no key.
pub fn router(state: AppState) -> Router {
    let limit = state.config().max_body_bytes;
    let cors = crate::cors::layer(&state.config().allowed_origins);
    let router = generation_routes()
        .route(
            "/v1/files",
            post(batch::upload_file)
                // Uploads have their own limit, counted as they stream in.
                .layer(DefaultBodyLimit::disable())
                .get(batch::list_files),
        )
        .route(
            "/v1/files/{id}",
            get(batch::retrieve_file).delete(batch::delete_file),
        )
        .route("/v1/files/{id}/content", get(batch::file_content))
        .route(
            "/v1/batches",
            post(batch::create_batch).get(batch::list_batches),
        )
        .route("/v1/batches/{id}", get(batch::retrieve_batch))
        .route("/v1/batches/{id}/cancel", post(batch::cancel_batch))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{*id}", get(models::retrieve))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/v2/models/{name}/ready", get(health::model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(health::version_ready),
        )
        .route("/metrics", get(metrics::metrics))
        .route("/v1/monitoring/drift", get(monitoring::drift))
        .route("/v1/monitoring/compare", get(monitoring::compare))
        .route("/v2/repository/index", post(repository::index))
        .route("/v2/repository/models/{name}/load", post(repository::load))
        .route(
            "/v2/repository/models/{name}/unload",
            post(repository::unload),
        )
        .route(
            "/v2/repository/models/{name}/aliases/{alias}",
            put(repository::put_alias).delete(repository::delete_alias),
        )
        .route(
            "/v2/repository/models/{name}/aliases/{alias}/rollback",
            post(repository::rollback_alias),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::middleware::observe,
        ));
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.with_state(state)
}

/// The routes that run models: the same handlers serve clients and batch
/// lines (run in process, see [`crate::batch`]).
pub(crate) fn generation_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::route_not_found(method.as_str(), uri.path())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError {
        status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
        ..ApiError::route_not_found(method.as_str(), uri.path())
    }
}
