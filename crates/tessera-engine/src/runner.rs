//! The engine's view of a model: something that runs a [`Batch`] over a paged KV
//! cache. The model crate implements it; the engine never sees a tensor.

use crate::batch::Batch;

/// Next-token logits, one row per chunk of the batch that asked for them, in
/// batch order.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    pub vocab_size: usize,
    pub data: Vec<f32>,
}

impl Logits {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.data.len().checked_div(self.vocab_size).unwrap_or(0)
    }

    /// The logits of row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.vocab_size..(i + 1) * self.vocab_size]
    }

    /// The logits of row `i`, for a sampler that edits them in place.
    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.data[i * self.vocab_size..(i + 1) * self.vocab_size]
    }
}

/// A model bound to a device and a KV pool.
pub trait Runner: Send {
    /// Error type of the model side.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Tokens per KV block.
    fn block_size(&self) -> usize;
    /// Blocks in the KV pool.
    fn num_blocks(&self) -> usize;
    /// Longest sequence (prompt plus output) the model accepts.
    fn max_model_len(&self) -> usize;
    /// The attention window, when every layer attends only to the last `w`
    /// positions (itself included; Mistral's sliding window): the engine then
    /// frees each sequence's blocks that lie wholly before the window of its
    /// next token. `None` (the default) when any layer attends to the whole
    /// context, as Gemma's global layers do between its sliding ones.
    fn sliding_window(&self) -> Option<usize> {
        None
    }
    /// Runs one step: writes the chunks' K/V into their blocks and returns the
    /// logits requested.
    fn execute(&mut self, batch: &Batch) -> Result<Logits, Self::Error>;
}
