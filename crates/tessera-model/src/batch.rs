//! The engine's [`Batch`] flattened into the arrays a device consumes: all new tokens
//! back to back, their positions and KV slots, and per-sequence attention metadata.

use tessera_engine::Batch;

use crate::error::{ModelError, Result};

/// Attention metadata of one sequence in a [`FlatBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqMeta {
    /// Index of the sequence's first new token in the flat arrays.
    pub query_start: usize,
    /// Number of new tokens.
    pub query_len: usize,
    /// Tokens in the KV cache after this step (earlier ones plus the new ones).
    pub context_len: usize,
    /// The sequence's KV blocks, in order.
    pub block_table: Vec<u32>,
}

/// A batch in device layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatBatch {
    pub token_ids: Vec<u32>,
    pub positions: Vec<u32>,
    /// KV slot of each new token: `block * block_size + offset`.
    pub slot_mapping: Vec<u32>,
    pub seqs: Vec<SeqMeta>,
    /// Flat index of the token whose logits each requesting sequence wants.
    pub logit_rows: Vec<usize>,
    pub block_size: usize,
}

impl FlatBatch {
    /// Flattens `batch`, checking it against the pool's geometry.
    pub fn new(
        batch: &Batch,
        block_size: usize,
        num_blocks: usize,
        max_len: usize,
    ) -> Result<Self> {
        let n = batch.num_tokens();
        let mut flat = FlatBatch {
            token_ids: Vec::with_capacity(n),
            positions: Vec::with_capacity(n),
            slot_mapping: Vec::with_capacity(n),
            seqs: Vec::with_capacity(batch.chunks.len()),
            logit_rows: Vec::with_capacity(batch.num_logit_rows()),
            block_size,
        };
        for (i, chunk) in batch.chunks.iter().enumerate() {
            let context_len = chunk.context_len();
            if chunk.token_ids.is_empty() {
                return Err(ModelError::InvalidBatch(format!("chunk {i} has no tokens")));
            }
            if context_len > max_len {
                return Err(ModelError::InvalidBatch(format!(
                    "chunk {i} reaches position {context_len}, beyond the model's {max_len}"
                )));
            }
            if chunk.block_table.len() * block_size < context_len {
                return Err(ModelError::InvalidBatch(format!(
                    "chunk {i}: {} blocks cannot hold {context_len} tokens",
                    chunk.block_table.len()
                )));
            }
            if let Some(b) = chunk
                .block_table
                .iter()
                .find(|&&b| b as usize >= num_blocks)
            {
                return Err(ModelError::InvalidBatch(format!(
                    "chunk {i}: block {b} is outside the pool of {num_blocks}"
                )));
            }
            let query_start = flat.token_ids.len();
            for (j, &tok) in chunk.token_ids.iter().enumerate() {
                let pos = chunk.start_position + j;
                let block = chunk.block_table[pos / block_size] as usize;
                flat.token_ids.push(tok);
                flat.positions.push(pos as u32);
                flat.slot_mapping
                    .push((block * block_size + pos % block_size) as u32);
            }
            if chunk.wants_logits {
                flat.logit_rows
                    .push(query_start + chunk.token_ids.len() - 1);
            }
            flat.seqs.push(SeqMeta {
                query_start,
                query_len: chunk.token_ids.len(),
                context_len,
                block_table: chunk.block_table.clone(),
            });
        }
        Ok(flat)
    }

    /// Number of new tokens.
    pub fn num_tokens(&self) -> usize {
        self.token_ids.len()
    }
}
