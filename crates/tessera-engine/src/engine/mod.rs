//! The engine: a step loop on its own thread that schedules, runs the model and
//! turns logits into tokens and text, fed through an [`EngineHandle`].

mod core;
mod handle;
mod invariants;
mod request_state;
mod sample_state;

pub use handle::{spawn, EngineExit, EngineHandle, OutputStream, SubmitError};

/// What an engine's model computes for a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EngineTask {
    /// Next-token logits: prompts are prefilled (in chunks) and continued.
    #[default]
    Generate,
    /// One vector per prompt (an embedding model: the runner's row for a
    /// sequence is its pooled embedding). Each prompt runs whole in one step,
    /// because an encoder attends both ways; the request ends with that step
    /// and its blocks go back at once (no prefix cache: nothing is kept).
    Embed,
}

use std::sync::atomic::{AtomicU64, Ordering};

/// Engine settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Most new tokens per step (prefill chunks plus decodes).
    pub max_num_batched_tokens: usize,
    /// Most sequences running at once.
    pub max_num_seqs: usize,
    /// Most batch-priority sequences running at once; the other slots are
    /// kept for interactive requests (which also preempt batch ones).
    pub max_batch_seqs: usize,
    /// Most batch-priority prompt tokens in one step: bounds how long a step
    /// with batch prompts in it runs, so an interactive prompt arriving
    /// meanwhile waits little.
    pub max_batch_prefill_tokens: usize,
    /// A step that computes an interactive prompt carries no batch work
    /// (unless the step before it carried none either). Generation only:
    /// an embedding model's steps are whole prompts, shared as they come.
    pub hold_batch_for_interactive_prefill: bool,
    /// Most requests waiting for admission; beyond it `submit` fails fast.
    pub max_waiting_requests: usize,
    /// Reuse the KV of full prompt blocks across requests.
    pub enable_prefix_caching: bool,
    /// Tokens that end a sequence (unless `ignore_eos`).
    pub eos_token_ids: Vec<u32>,
    /// Size of the model's vocabulary (token ids must be below it).
    pub vocab_size: usize,
    /// Generation or embeddings.
    pub task: EngineTask,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_num_batched_tokens: 512,
            max_num_seqs: 128,
            max_batch_seqs: 64,
            max_batch_prefill_tokens: 512,
            hold_batch_for_interactive_prefill: true,
            max_waiting_requests: 4096,
            enable_prefix_caching: true,
            eos_token_ids: Vec::new(),
            vocab_size: 0,
            task: EngineTask::Generate,
        }
    }
}

/// Counters and gauges of the engine's work since start-up, written by the
/// engine thread and read by anyone through [`EngineHandle::stats`]. Plain
/// atomics: exporting them (Prometheus, logs) is the front end's business.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Steps run.
    pub steps: AtomicU64,
    /// Sequences preempted.
    pub preemptions: AtomicU64,
    /// Prompt tokens computed (prefix-cache hits excluded).
    pub prompt_tokens_computed: AtomicU64,
    /// Prompt tokens served from the prefix cache.
    pub prompt_tokens_cached: AtomicU64,
    /// Tokens generated.
    pub generated_tokens: AtomicU64,
    /// Nanoseconds spent in steps, in total.
    pub step_nanos: AtomicU64,
    /// Nanoseconds of those spent in the model forward.
    pub forward_nanos: AtomicU64,
    /// Nanoseconds the latest step took (a gauge).
    pub last_step_nanos: AtomicU64,
    /// KV blocks in the pool.
    pub num_blocks: AtomicU64,
    /// KV blocks not held by any sequence (a gauge, updated after every step
    /// and abort; blocks keeping a cached prefix count as free).
    pub free_blocks: AtomicU64,
    /// Prompt tokens looked up in the prefix cache when sequences were
    /// admitted (whole blocks only; readmissions after preemption count again).
    pub prefix_cache_queries: AtomicU64,
    /// Of those, tokens found cached.
    pub prefix_cache_hits: AtomicU64,
    /// Requests admitted and not finished (a gauge; a preempted request
    /// waiting to be recomputed still counts).
    pub running_requests: AtomicU64,
    /// Requests the engine ended with an error of its own: the model forward
    /// failed, returned malformed or non-finite logits, or a token could not
    /// be detokenized.
    pub failed_requests: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub steps: u64,
    pub preemptions: u64,
    pub prompt_tokens_computed: u64,
    pub prompt_tokens_cached: u64,
    pub generated_tokens: u64,
    pub step_nanos: u64,
    pub forward_nanos: u64,
    pub last_step_nanos: u64,
    pub num_blocks: u64,
    pub free_blocks: u64,
    pub prefix_cache_queries: u64,
    pub prefix_cache_hits: u64,
    pub running_requests: u64,
    pub failed_requests: u64,
    /// Requests submitted and not yet admitted.
    pub waiting_requests: u64,
}

impl EngineStats {
    /// Reads every counter (`waiting_requests` is the handle's to fill in).
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            steps: r(&self.steps),
            preemptions: r(&self.preemptions),
            prompt_tokens_computed: r(&self.prompt_tokens_computed),
            prompt_tokens_cached: r(&self.prompt_tokens_cached),
            generated_tokens: r(&self.generated_tokens),
            step_nanos: r(&self.step_nanos),
            forward_nanos: r(&self.forward_nanos),
            last_step_nanos: r(&self.last_step_nanos),
            num_blocks: r(&self.num_blocks),
            free_blocks: r(&self.free_blocks),
            prefix_cache_queries: r(&self.prefix_cache_queries),
            prefix_cache_hits: r(&self.prefix_cache_hits),
            running_requests: r(&self.running_requests),
            failed_requests: r(&self.failed_requests),
            waiting_requests: 0,
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
