//! What the scheduler hands the runner each step.

/// The tokens of one sequence computed in this step, with where its KV lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceChunk {
    /// New tokens to run through the model: a whole prompt, a chunk of one, or
    /// the single token of a decode step.
    pub token_ids: Vec<u32>,
    /// Position of `token_ids[0]` in the sequence; everything before it is already
    /// in the KV cache.
    pub start_position: usize,
    /// The KV blocks of the sequence, in order; they cover at least
    /// `start_position + token_ids.len()` tokens.
    pub block_table: Vec<u32>,
    /// Whether the model must produce next-token logits after the last new token
    /// (false for a prompt chunk that is not the prompt's last).
    pub wants_logits: bool,
}

impl SequenceChunk {
    /// Number of tokens in the KV cache once this chunk has run.
    pub fn context_len(&self) -> usize {
        self.start_position + self.token_ids.len()
    }
}

/// One step's work for the model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub chunks: Vec<SequenceChunk>,
}

impl Batch {
    /// Total new tokens in the batch.
    pub fn num_tokens(&self) -> usize {
        self.chunks.iter().map(|c| c.token_ids.len()).sum()
    }

    /// Number of sequences that want logits; the runner returns that many rows.
    pub fn num_logit_rows(&self) -> usize {
        self.chunks.iter().filter(|c| c.wants_logits).count()
    }
}
