//! Continuous batching: which sequences run in the next step, and how many of
//! their tokens.
//!
//! Each step has a token budget and a cap on running sequences. Running
//! sequences go first: a decode costs one token, an unfinished prompt its next
//! chunk (chunked prefill). Waiting sequences are then admitted by priority and
//! arrival, reusing cached prefix blocks. When blocks run out, the
//! lowest-priority, latest-arrived running sequence is preempted: its blocks are
//! released (full ones stay in the prefix cache) and it is recomputed later.
//!
//! Batch work runs on what interactive work leaves: running interactive
//! sequences are served before running batch ones; a batch prompt's chunk
//! leaves the first waiting interactive prompt its tokens of the budget; at
//! most `max_batch_seqs` batch sequences run at once; and an interactive
//! sequence that finds every slot taken, or too few free blocks, pushes out
//! the latest running batch one.
//!
//! For a sliding-window model, each step first releases every running
//! sequence's blocks that lie wholly before the window of its next token
//! (their table entries become the pool's null block), so a long sequence
//! holds about `window / block_size + 1` blocks and admission and preemption,
//! which count held and free blocks, see that bound.
//!
//! Two rules bound what batch work adds to an interactive prompt's time to
//! first token. A step cannot be interrupted, so a prompt that arrives while
//! one runs waits for all of it: batch prompt chunks take at most
//! `max_batch_prefill_tokens` of a step (new batch lines start together as
//! others finish, and without the cap their prompts would fill one long
//! step). And a step that computes an interactive prompt carries no batch
//! work (`hold_batch_for_interactive_prefill`), unless the step before it
//! held batch work out too: so batch sequences sit out at most every other
//! step and always progress.

mod sequence;
mod window;

use std::collections::{BTreeMap, HashMap};

use crate::block_pool::{BlockId, BlockPool};
use crate::request::Priority;

pub use sequence::{SeqId, Sequence};
pub use window::SlidingWindow;

/// Limits of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Most new tokens in one step, over all sequences.
    pub max_num_batched_tokens: usize,
    /// Most sequences running at once.
    pub max_num_seqs: usize,
    /// Most batch-priority sequences running at once (the rest of the slots
    /// stay free for interactive work).
    pub max_batch_seqs: usize,
    /// Most batch-priority prompt tokens (chunks of batch prompts) in one
    /// step; not applied with `whole_prompts`, where a prompt cannot be split.
    pub max_batch_prefill_tokens: usize,
    /// Keep batch work out of a step that computes an interactive prompt
    /// (at most every other step).
    pub hold_batch_for_interactive_prefill: bool,
    /// Admit a prompt only when all of it fits in the step (no chunked
    /// prefill): an encoder must see every token of a sequence at once.
    pub whole_prompts: bool,
    /// The model's attention window when every layer has one (see
    /// [`crate::Runner::sliding_window`]): blocks before it are released.
    pub sliding_window: Option<usize>,
}

/// One sequence's share of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    /// The sequence.
    pub seq: SeqId,
    /// New tokens to compute, starting at the sequence's computed count.
    pub num_tokens: usize,
}

/// Prefix-cache lookups of admitted sequences, for metrics. Counted when a
/// sequence is admitted, not per lookup: a sequence that does not fit is looked
/// up again every step until it does, and that must not inflate the counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixCacheStats {
    /// Full prompt blocks looked up.
    pub queried_blocks: u64,
    /// Of those, found cached.
    pub hit_blocks: u64,
}

/// Key ordering the waiting queue: priority class, then arrival.
type WaitKey = (Priority, u64, SeqId);

/// The sequences in the engine and the KV pool they live in.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    pool: BlockPool,
    seqs: HashMap<SeqId, Sequence>,
    waiting: BTreeMap<WaitKey, ()>,
    running: Vec<SeqId>,
    num_preemptions: u64,
    prefix_stats: PrefixCacheStats,
    /// Set for a sliding-window model (the pool then holds a null block).
    window: Option<SlidingWindow>,
    /// Whether the last step kept batch work out for an interactive prompt.
    held_batch: bool,
}

impl Scheduler {
    /// A scheduler over `pool`. With a sliding window, one block of the pool
    /// becomes the null block.
    pub fn new(config: SchedulerConfig, mut pool: BlockPool) -> Self {
        let window = config
            .sliding_window
            .and_then(|w| SlidingWindow::new(w, pool.block_size()))
            .filter(|_| pool.reserve_null_block().is_some());
        Self {
            config,
            pool,
            window,
            seqs: HashMap::new(),
            waiting: BTreeMap::new(),
            running: Vec::new(),
            num_preemptions: 0,
            prefix_stats: PrefixCacheStats::default(),
            held_batch: false,
        }
    }

    /// The KV block pool.
    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    /// Sequences preempted so far.
    pub fn num_preemptions(&self) -> u64 {
        self.num_preemptions
    }

    /// Prefix-cache lookups of the sequences admitted so far.
    pub fn prefix_cache_stats(&self) -> PrefixCacheStats {
        self.prefix_stats
    }

    /// Sequences waiting to be (re)admitted.
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Sequences holding KV blocks.
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Whether there is nothing to do.
    pub fn is_idle(&self) -> bool {
        self.seqs.is_empty()
    }

    /// A sequence, if it is in the engine.
    pub fn get(&self, id: SeqId) -> Option<&Sequence> {
        self.seqs.get(&id)
    }

    /// A sequence, mutably, if it is in the engine.
    pub fn get_mut(&mut self, id: SeqId) -> Option<&mut Sequence> {
        self.seqs.get_mut(&id)
    }

    /// The sliding window blocks are released behind, if any.
    pub fn sliding_window(&self) -> Option<SlidingWindow> {
        self.window
    }

    /// Queues a sequence. Its blocks, if it already holds some (a sample forked
    /// from a computed prompt), must be shared references it owns.
    pub fn add(&mut self, mut seq: Sequence) {
        let null = self.pool.null_block();
        seq.num_released = seq
            .block_table
            .iter()
            .take_while(|&&b| Some(b) == null)
            .count();
        self.waiting.insert(seq.wait_key(), ());
        self.seqs.insert(seq.id, seq);
    }

    /// Shares `seq`'s first `num_blocks` blocks with a new owner (a sibling sample)
    /// and returns them. With a sliding window, nothing is shared when `seq`
    /// already released a block the new owner's next token reads (its prompt
    /// then runs again).
    pub fn share_blocks(&mut self, seq: SeqId, num_blocks: usize) -> Vec<BlockId> {
        let Some(s) = self.seqs.get(&seq) else {
            return Vec::new();
        };
        let num_blocks = num_blocks.min(s.block_table.len());
        let next = (num_blocks * self.pool.block_size()).min(s.prompt_len.saturating_sub(1));
        if window::blocks_before(self.window, next) < s.num_released {
            return Vec::new();
        }
        let blocks = s.block_table[..num_blocks].to_vec();
        self.pool.share(&blocks);
        blocks
    }

    /// Removes a sequence (finished or aborted) and releases its blocks.
    pub fn remove(&mut self, id: SeqId) -> Option<Sequence> {
        let mut seq = self.seqs.remove(&id)?;
        self.waiting.remove(&seq.wait_key());
        self.running.retain(|&r| r != id);
        self.pool.free(&std::mem::take(&mut seq.block_table));
        Some(seq)
    }

    /// Plans the next step. Every returned sequence has blocks for its new tokens.
    pub fn schedule(&mut self) -> Vec<Scheduled> {
        self.release_behind_windows();
        let hold = self.config.hold_batch_for_interactive_prefill
            && !self.held_batch
            && self.interactive_prompt_pending();
        let (mut out, preempted) = self.plan(hold, false);
        if hold && !out.iter().any(|p| self.is_interactive_prompt(p.seq)) {
            // The interactive prompt could not start (no blocks or slot
            // even after preemption): batch work need not wait for it. A
            // preemption in the first plan still bars new work from this
            // step, as it would have in a single plan.
            out = self.plan(false, preempted).0;
            self.held_batch = false;
        } else {
            self.held_batch = hold && self.seqs.values().any(|s| s.priority == Priority::Batch);
        }
        out
    }

    /// Plans a step; with `hold_batch`, of interactive work only. No new
    /// work is admitted once a sequence was pushed out in this step
    /// (`preempted`, also set by an earlier plan of the same step); returns
    /// the plan and whether that happened.
    fn plan(&mut self, hold_batch: bool, preempted: bool) -> (Vec<Scheduled>, bool) {
        let mut budget = self.config.max_num_batched_tokens;
        let mut batch_prefill = if self.config.whole_prompts {
            usize::MAX
        } else {
            self.config.max_batch_prefill_tokens
        };
        let mut out: Vec<Scheduled> = Vec::new();
        let mut preempted = preempted;
        // Interactive first; the sort is stable, so arrival order holds
        // within a class.
        let seqs = &self.seqs;
        self.running.sort_by_key(|id| seqs[id].priority);
        let reserve = self.interactive_reserve();

        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let id = self.running[i];
            let seq = &self.seqs[&id];
            let batch = seq.priority == Priority::Batch;
            let prompt_chunk = seq.num_uncomputed() > 1;
            // A batch prompt's chunk leaves a waiting interactive prompt its
            // share and stays under the batch prefill cap; batch decodes (one
            // token) go on unless held out, so batch work keeps finishing and
            // freeing blocks.
            let room = if batch && prompt_chunk {
                budget.saturating_sub(reserve).min(batch_prefill)
            } else {
                budget
            };
            let num_tokens = if batch && hold_batch {
                0
            } else {
                seq.num_uncomputed().min(room)
            };
            if num_tokens == 0 {
                i += 1;
                continue;
            }
            let mut scheduled_self = true;
            loop {
                let seq = &self.seqs[&id];
                let needed = seq.blocks_needed(num_tokens, self.pool.block_size());
                if let Some(blocks) = self.pool.allocate(needed) {
                    if let Some(s) = self.seqs.get_mut(&id) {
                        s.block_table.extend(blocks);
                    }
                    break;
                }
                let victim = self.pick_victim();
                preempted = true;
                let victim_index = self.running.iter().position(|&r| r == victim);
                self.preempt_planned(victim, &mut out, &mut budget);
                if victim == id {
                    scheduled_self = false;
                    break;
                }
                if victim_index.is_some_and(|v| v < i) {
                    i -= 1;
                }
            }
            if scheduled_self {
                out.push(Scheduled {
                    seq: id,
                    num_tokens,
                });
                budget -= num_tokens;
                if batch && prompt_chunk {
                    batch_prefill = batch_prefill.saturating_sub(num_tokens);
                }
                i += 1;
            }
        }

        // New work only when nothing had to be pushed out to make room.
        while !preempted && budget > 0 {
            let Some((&key, _)) = self.waiting.first_key_value() else {
                break;
            };
            // Interactive keys sort first: a batch head means no interactive
            // work waits.
            let batch = key.0 == Priority::Batch;
            if batch
                && (hold_batch
                    || batch_prefill == 0
                    || self.num_running_batch() >= self.config.max_batch_seqs)
            {
                break;
            }
            if self.running.len() >= self.config.max_num_seqs
                && (batch || !self.preempt_batch_for_slot(&mut out, &mut budget))
            {
                break;
            }
            let id = key.2;
            let room = if batch {
                budget.min(batch_prefill)
            } else {
                budget
            };
            let Some(num_tokens) = self.admit(id, room) else {
                // Too few free blocks: an interactive sequence takes them
                // from running batch work, one sequence at a time.
                if !batch && self.preempt_batch_for_slot(&mut out, &mut budget) {
                    continue;
                }
                break;
            };
            self.waiting.remove(&key);
            self.running.push(id);
            out.push(Scheduled {
                seq: id,
                num_tokens,
            });
            budget -= num_tokens;
            if batch {
                batch_prefill = batch_prefill.saturating_sub(num_tokens);
            }
        }
        (out, preempted)
    }

    /// Records that a scheduled step ran: advances the sequence and registers
    /// its newly completed full blocks in the prefix cache.
    pub fn mark_computed(&mut self, id: SeqId, num_tokens: usize) {
        let Some(seq) = self.seqs.get_mut(&id) else {
            return;
        };
        seq.num_computed += num_tokens;
        if !self.pool.prefix_caching() {
            return;
        }
        let block_size = self.pool.block_size();
        let full = seq.num_computed / block_size;
        seq.extend_hashes(full, block_size);
        for b in seq.num_cached_blocks..full {
            self.pool
                .cache_full_block(seq.block_table[b], seq.block_hashes[b]);
        }
        seq.num_cached_blocks = seq.num_cached_blocks.max(full);
    }

    /// Releases the blocks of running sequences that no future token of
    /// theirs reads (a sliding-window model): each becomes the null block in
    /// the table, and goes back to the pool (a full prompt block stays
    /// findable in the prefix cache).
    fn release_behind_windows(&mut self) {
        let (Some(window), Some(null)) = (self.window, self.pool.null_block()) else {
            return;
        };
        let mut released = Vec::new();
        for id in &self.running {
            let Some(seq) = self.seqs.get_mut(id) else {
                continue;
            };
            let behind = window
                .blocks_before(seq.num_computed)
                .min(seq.block_table.len());
            if behind > seq.num_released {
                for entry in &mut seq.block_table[seq.num_released..behind] {
                    released.push(std::mem::replace(entry, null));
                }
                seq.num_released = behind;
            }
        }
        self.pool.free(&released);
    }

    /// Reserves blocks for a waiting sequence's first chunk, reusing cached
    /// prefix blocks; `None` (and nothing held) when they do not fit.
    fn admit(&mut self, id: SeqId, budget: usize) -> Option<usize> {
        let block_size = self.pool.block_size();
        let seq = self.seqs.get_mut(&id)?;
        let mut cached = Vec::new();
        let mut queried = 0;
        let mut hit = 0;
        if seq.block_table.is_empty() && self.pool.prefix_caching() {
            // Never the last token: its logits are needed, so it must be computed.
            let reusable = (seq.tokens.len() - 1) / block_size;
            queried = reusable;
            seq.extend_hashes(reusable, block_size);
            let found: Vec<Option<BlockId>> = seq.block_hashes[..reusable]
                .iter()
                .map(|h| self.pool.cached_block(h))
                .collect();
            hit = window::longest_hit(self.window, found.iter().map(Option::is_some));
            // Blocks before the window of the first token to compute are
            // not needed, cached or not.
            let skipped = window::blocks_before(self.window, hit * block_size);
            cached = found[skipped..hit].iter().flatten().copied().collect();
            self.pool.share(&cached);
            seq.block_table = match self.pool.null_block() {
                Some(null) => vec![null; skipped],
                None => Vec::new(),
            };
            seq.block_table.extend(&cached);
            seq.num_computed = hit * block_size;
            seq.num_cached_blocks = hit;
            seq.num_released = skipped;
        }
        if self.config.whole_prompts && seq.num_uncomputed() > budget {
            return None;
        }
        let num_tokens = seq.num_uncomputed().min(budget);
        let needed = seq.blocks_needed(num_tokens, block_size);
        match self.pool.allocate(needed) {
            Some(blocks) => {
                self.prefix_stats.queried_blocks += queried as u64;
                self.prefix_stats.hit_blocks += hit as u64;
                if !seq.admitted_once {
                    seq.admitted_once = true;
                    seq.cached_prompt_tokens = seq.num_computed.min(seq.prompt_len);
                }
                seq.block_table.extend(blocks);
                Some(num_tokens)
            }
            None => {
                if hit > 0 {
                    self.pool.free(&cached);
                    seq.drop_kv();
                }
                None
            }
        }
    }

    /// Tokens of this step kept for the first waiting sequence when it is
    /// interactive.
    fn interactive_reserve(&self) -> usize {
        self.waiting
            .first_key_value()
            .filter(|(key, _)| key.0 == Priority::Interactive)
            .and_then(|(key, _)| self.seqs.get(&key.2))
            .map_or(0, Sequence::num_uncomputed)
    }

    /// Whether an interactive prompt may be computed next step: one is
    /// partly computed, or waits first in line.
    fn interactive_prompt_pending(&self) -> bool {
        self.running
            .iter()
            .any(|&id| self.is_interactive_prompt(id))
            || self
                .waiting
                .first_key_value()
                .is_some_and(|(key, _)| key.0 == Priority::Interactive)
    }

    /// Whether `id` is an interactive sequence with prompt tokens (more than
    /// its next one) to compute.
    fn is_interactive_prompt(&self, id: SeqId) -> bool {
        self.seqs
            .get(&id)
            .is_some_and(|s| s.priority == Priority::Interactive && s.num_uncomputed() > 1)
    }

    fn num_running_batch(&self) -> usize {
        self.running
            .iter()
            .filter(|id| self.seqs[id].priority == Priority::Batch)
            .count()
    }

    /// Frees a running slot and its blocks for an interactive sequence by
    /// preempting the latest running batch sequence (taking back its share
    /// of this step); false when none runs.
    fn preempt_batch_for_slot(&mut self, out: &mut Vec<Scheduled>, budget: &mut usize) -> bool {
        let victim = self
            .running
            .iter()
            .copied()
            .filter(|id| self.seqs[id].priority == Priority::Batch)
            .max_by_key(|id| self.seqs[id].arrival);
        let Some(victim) = victim else {
            return false;
        };
        self.preempt_planned(victim, out, budget);
        true
    }

    /// Pushes `victim` out, taking back the tokens this step's plan gave it.
    fn preempt_planned(&mut self, victim: SeqId, out: &mut Vec<Scheduled>, budget: &mut usize) {
        if let Some(pos) = out.iter().position(|s| s.seq == victim) {
            *budget += out.remove(pos).num_tokens;
        }
        self.preempt(victim);
    }

    /// The running sequence to push out: lowest priority, then latest arrival.
    fn pick_victim(&self) -> SeqId {
        *self
            .running
            .iter()
            .max_by_key(|id| {
                let s = &self.seqs[id];
                (s.priority, s.arrival)
            })
            .expect("preemption with a sequence running")
    }

    fn preempt(&mut self, id: SeqId) {
        self.running.retain(|&r| r != id);
        let Some(seq) = self.seqs.get_mut(&id) else {
            return;
        };
        self.pool.free(&seq.drop_kv());
        seq.num_preemptions += 1;
        self.num_preemptions += 1;
        self.waiting.insert(seq.wait_key(), ());
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod window_tests;
