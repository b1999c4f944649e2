//! Embedding models: encoders (BERT) whose pooled last hidden states are a
//! sentence's vector, as sentence-transformers computes them.
//!
//! CPU only: the encoder uses the CPU backend's linear layers directly and
//! its own row-wise layer norm, GELU and bidirectional attention, which the
//! [`crate::backend::Backend`] trait (causal, paged, RMSNorm) does not have.

pub mod bert;
pub mod config;
pub mod runner;

pub use bert::BertModel;
pub use config::{is_encoder_dir, EncoderConfig, Pooling};
pub use runner::EncoderRunner;
