//! tessera's model side: weight formats, tokenizer, chat templates, the model
//! families and their forward written once over backend operations, the runner the engine drives, and
//! encoders for embeddings.

pub mod backend;
pub mod batch;
pub mod chat;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod encoder;
pub mod error;
pub mod families;
pub mod gguf;
pub mod hub;
pub mod loader;
pub mod runner;
pub mod safetensors;
pub mod structured;
pub mod tokenizer;
pub mod weights;

pub use error::{ModelError, Result};
