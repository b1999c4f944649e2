//! One sequence's KV-side state: its tokens, how many are computed, its blocks.

use crate::block_pool::{block_hashes, BlockHash, BlockId};
use crate::request::Priority;

/// Identifies a sequence (one sample of a request).
pub type SeqId = u64;

/// A sequence as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct Sequence {
    /// Its id.
    pub id: SeqId,
    /// Scheduling class.
    pub priority: Priority,
    /// Arrival order; earlier is served first within a class.
    pub arrival: u64,
    /// Prompt then generated tokens.
    pub tokens: Vec<u32>,
    /// Tokens of `tokens` that are prompt.
    pub prompt_len: usize,
    /// Tokens whose KV is in the cache.
    pub num_computed: usize,
    /// KV blocks, in order; with a sliding window, the first
    /// `num_released` are the pool's null block.
    pub block_table: Vec<BlockId>,
    /// Leading blocks released because no future token reads them.
    pub num_released: usize,
    /// Chain hashes of full blocks of `tokens` computed so far.
    pub block_hashes: Vec<BlockHash>,
    /// Leading blocks already registered in the prefix cache.
    pub num_cached_blocks: usize,
    /// Prompt tokens found in the prefix cache at first admission.
    pub cached_prompt_tokens: usize,
    /// Whether the sequence was ever admitted.
    pub admitted_once: bool,
    /// Times this sequence was preempted.
    pub num_preemptions: u32,
}

impl Sequence {
    /// A new sequence for `prompt`, holding `shared_blocks` (already referenced
    /// for it) that cover its first tokens.
    pub fn new(
        id: SeqId,
        priority: Priority,
        arrival: u64,
        prompt: Vec<u32>,
        shared_blocks: Vec<BlockId>,
        block_size: usize,
    ) -> Self {
        let prompt_len = prompt.len();
        let num_computed = (shared_blocks.len() * block_size).min(prompt_len.saturating_sub(1));
        Self {
            id,
            priority,
            arrival,
            tokens: prompt,
            prompt_len,
            num_computed,
            num_cached_blocks: 0,
            cached_prompt_tokens: num_computed,
            admitted_once: !shared_blocks.is_empty(),
            block_table: shared_blocks,
            num_released: 0,
            block_hashes: Vec::new(),
            num_preemptions: 0,
        }
    }

    /// Tokens not yet in the KV cache.
    pub fn num_uncomputed(&self) -> usize {
        self.tokens.len() - self.num_computed
    }

    /// Generated tokens.
    pub fn output(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    /// Forgets the sequence's KV: it will be computed again from the start.
    /// Returns the block table, for the caller to give back to the pool.
    pub fn drop_kv(&mut self) -> Vec<BlockId> {
        self.num_computed = 0;
        self.num_cached_blocks = 0;
        self.num_released = 0;
        std::mem::take(&mut self.block_table)
    }

    /// Blocks to add so that `num_tokens` more tokens have room.
    pub fn blocks_needed(&self, num_tokens: usize, block_size: usize) -> usize {
        (self.num_computed + num_tokens)
            .div_ceil(block_size)
            .saturating_sub(self.block_table.len())
    }

    /// Makes `block_hashes` cover the first `num_blocks` full blocks.
    pub fn extend_hashes(&mut self, num_blocks: usize, block_size: usize) {
        let have = self.block_hashes.len();
        if num_blocks <= have {
            return;
        }
        let parent = self.block_hashes.last().copied();
        let from = have * block_size;
        let more = block_hashes(parent, &self.tokens[from..], block_size, num_blocks - have);
        self.block_hashes.extend(more);
    }

    pub(super) fn wait_key(&self) -> (Priority, u64, SeqId) {
        (self.priority, self.arrival, self.id)
    }
}
