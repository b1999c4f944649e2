//! tessera's HTTP front: an OpenAI-compatible API (chat and text completions,
//! streamed as server-sent events or not), models, tokenization and health,
//! over one or more engines held in a [`ModelRegistry`].
//!
//! The crate knows the engine but not the model crate: a model's tokenizer and
//! chat template reach it through the [`TextModel`] trait.

mod body;
mod compat;
pub mod error;
mod ids;
mod logprobs;
mod messages;
pub mod openai;
mod outputs;
pub mod registry;
mod routes;
mod sampling;
mod server;
mod state;
mod text;

pub use error::ApiError;
pub use registry::{ModelRegistry, ServedModel};
pub use routes::router;
pub use server::{serve, shutdown_signal};
pub use state::{AppState, DEFAULT_MAX_BODY_BYTES};
pub use text::TextModel;
