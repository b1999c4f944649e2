//! [`EncoderRunner`]: an encoder behind the engine's [`Runner`] trait, for an
//! engine in embedding mode. Its "logits" row for a sequence is the
//! sequence's pooled vector; it keeps no KV (the engine's blocks for it are
//! bookkeeping only, returned as soon as the step ends).

use tessera_engine::{Batch, Logits, Runner};

use super::bert::BertModel;
use crate::error::{ModelError, Result};

/// Runs whole prompts through a [`BertModel`].
pub struct EncoderRunner {
    model: BertModel,
    block_size: usize,
    num_blocks: usize,
}

impl EncoderRunner {
    /// A runner whose engine may put up to `max_batched_tokens` tokens of up
    /// to `max_seqs` sequences in one step.
    pub fn new(model: BertModel, max_batched_tokens: usize, max_seqs: usize) -> Self {
        const BLOCK: usize = 16;
        let tokens = max_batched_tokens.max(model.config.max_model_len);
        // Enough blocks for a full step, each sequence rounding up one block.
        let num_blocks = tokens.div_ceil(BLOCK) + max_seqs.max(1);
        Self {
            model,
            block_size: BLOCK,
            num_blocks,
        }
    }

    /// The encoder.
    pub fn model(&self) -> &BertModel {
        &self.model
    }
}

impl Runner for EncoderRunner {
    type Error = ModelError;

    fn block_size(&self) -> usize {
        self.block_size
    }

    fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    fn max_model_len(&self) -> usize {
        self.model.config.max_model_len
    }

    fn execute(&mut self, batch: &Batch) -> Result<Logits> {
        let mut inputs = Vec::with_capacity(batch.chunks.len());
        for chunk in &batch.chunks {
            if chunk.start_position != 0 || !chunk.wants_logits {
                return Err(ModelError::InvalidBatch(
                    "an encoder runs whole inputs only (the engine must be in embedding mode)"
                        .into(),
                ));
            }
            inputs.push(chunk.token_ids.as_slice());
        }
        Ok(Logits {
            vocab_size: self.model.config.hidden_size,
            data: self.model.embed(&inputs)?,
        })
    }
}
