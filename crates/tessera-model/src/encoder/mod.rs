//! Embedding models: encoders (BERT) whose pooled last hidden states are a
//! sentence's vector, as sentence-transformers computes them. (Decoders used
//! as embedders run in [`crate::runner::ModelRunner`] with an
//! [`EmbeddingHead`], on any backend.)
//!
//! CPU only: the encoder uses the CPU backend's linear layers directly and
//! its own row-wise layer norm, GELU and bidirectional attention, which the
//! [`crate::backend::Backend`] trait (causal, paged, RMSNorm) does not have.

pub mod bert;
pub mod config;
pub mod runner;

pub use bert::BertModel;
pub use config::{decoder_embedding_head, is_encoder_dir, EmbeddingHead, EncoderConfig, Pooling};
pub use runner::EncoderRunner;
