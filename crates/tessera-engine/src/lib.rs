//! tessera's serving core. It holds no tensors: it decides which tokens of which
//! sequences are computed in each step and turns the model's outputs into text.
//! The model side plugs in through the [`Runner`] trait.

pub mod batch;
pub mod block_pool;
pub mod constraint;
pub mod detokenize;
pub mod engine;
pub mod request;
pub mod runner;
pub mod scheduler;
pub mod stop;

pub use batch::{Batch, SequenceChunk};
pub use constraint::{Constraint, ConstraintFactory, TokenConstraint};
pub use detokenize::{IncrementalDetokenizer, TokenDecoder};
pub use runner::{Logits, Runner};

pub mod sampling;
pub use sampling::{SampledToken, Sampler, SamplingError, SamplingParams};
