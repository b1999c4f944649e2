//! tessera's HTTP front: an OpenAI-compatible API (chat and text completions,
//! streamed as server-sent events or not), models, tokenization and health,
//! over the model versions a [`ModelManager`] holds; and the management API
//! (Triton's repository paths: load, unload, aliases, rollback) behind an
//! admin key.
//!
//! The crate knows the engine but not the model crate: a model's tokenizer and
//! chat template reach it through the [`TextModel`] trait.
//!
//! Batch inference: OpenAI's Files and Batches APIs over a persistent
//! store ([`batch`]), run at batch priority through the same handlers.
//!
//! Operations: Prometheus metrics at `/metrics`, one log line per request,
//! API keys, per-key rate and stream limits, request limits and timeouts,
//! TLS and CORS, all set through [`ServerConfig`].

mod access;
pub mod auth;
pub mod batch;
mod body;
mod body_log;
mod compat;
pub mod config;
pub mod conn_activity;
mod conn_io;
pub mod conn_limit;
pub mod context;
mod cors;
pub mod error;
mod ids;
mod logprobs;
mod messages;
pub mod metrics;
mod middleware;
pub mod monitoring;
pub mod openai;
mod outputs;
pub mod rate_limit;
pub mod registry;
mod routes;
mod sampling;
mod server;
mod state;
pub mod streams;
mod structured;
mod text;
pub mod tls;
pub mod tools;
mod tracker;

pub use config::{ConfigError, Limits, RateLimitConfig, ServerConfig, DEFAULT_MAX_BODY_BYTES};
pub use error::ApiError;
pub use registry::{
    EmbeddingInfo, ModelManager, Route, ServedModel, SESSION_HEADER, VERSION_HEADER,
};
pub use routes::router;
pub use sampling::MAX_N;
pub use server::{serve, shutdown_signal, ClientAddr, ConnInfo};
pub use state::AppState;
pub use text::{GrammarSpec, TextModel};
pub use tls::{load_acceptor, TlsError};
