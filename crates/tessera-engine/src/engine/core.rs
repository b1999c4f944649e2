//! One engine step: schedule, run the model, sample, stream outputs.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::invariants::{check_finite, check_shape};
use super::request_state::{QueueOrder, RequestState};
use super::sample_state::SampleState;
use super::{EngineConfig, EngineStats, EngineTask};
use crate::batch::{Batch, SequenceChunk};
use crate::block_pool::BlockPool;
use crate::detokenize::TokenDecoder;
use crate::request::{
    FinishReason, Priority, Request, RequestId, RequestOutput, TokenLogprob, Usage,
};
use crate::runner::{Logits, Runner};
use crate::sampling::SamplingParams;
use crate::scheduler::{Scheduled, Scheduler, SchedulerConfig, SeqId, Sequence, SlidingWindow};

/// The engine's state, driven by the loop thread.
pub(super) struct EngineCore<R: Runner, D: TokenDecoder> {
    runner: R,
    decoder: Arc<D>,
    config: EngineConfig,
    scheduler: Scheduler,
    requests: HashMap<RequestId, RequestState>,
    samples: HashMap<SeqId, SampleState>,
    next_seq: SeqId,
    next_arrival: u64,
    max_len: usize,
    stats: Arc<EngineStats>,
    /// Requests admitted and not finished (published as a gauge).
    num_admitted: u64,
    /// Called once per request when it leaves the waiting queue.
    on_admit: Box<dyn Fn() + Send>,
}

impl<R: Runner, D: TokenDecoder> EngineCore<R, D> {
    pub fn new(
        runner: R,
        decoder: Arc<D>,
        config: EngineConfig,
        stats: Arc<EngineStats>,
        on_admit: Box<dyn Fn() + Send>,
    ) -> Self {
        let embed = config.task == EngineTask::Embed;
        let pool = BlockPool::new(
            runner.num_blocks(),
            runner.block_size(),
            config.enable_prefix_caching && !embed,
        );
        let max_len = max_sequence_len(&runner, &config);
        // An embedding prompt runs whole, so a step must be able to hold the
        // longest one.
        let min_budget = if embed { max_len } else { 1 };
        let scheduler = Scheduler::new(
            SchedulerConfig {
                max_num_batched_tokens: config.max_num_batched_tokens.max(min_budget),
                max_num_seqs: config.max_num_seqs.max(1),
                max_batch_seqs: config.max_batch_seqs.max(1),
                max_batch_prefill_tokens: config.max_batch_prefill_tokens.max(1),
                // An encoder's step computes whole prompts and no decodes:
                // batch prompts share it as they did before.
                hold_batch_for_interactive_prefill: config.hold_batch_for_interactive_prefill
                    && !embed,
                whole_prompts: embed,
                sliding_window: sliding_window(&runner, &config),
            },
            pool,
        );
        let s = &stats;
        s.num_blocks
            .store(scheduler.pool().num_blocks() as u64, Ordering::Relaxed);
        s.free_blocks
            .store(scheduler.pool().num_free() as u64, Ordering::Relaxed);
        Self {
            runner,
            decoder,
            config,
            scheduler,
            requests: HashMap::new(),
            samples: HashMap::new(),
            next_seq: 0,
            next_arrival: 0,
            max_len,
            stats,
            num_admitted: 0,
            on_admit,
        }
    }

    pub fn is_idle(&self) -> bool {
        self.scheduler.is_idle()
    }

    /// Queues a validated request, submitted at `arrival`.
    pub fn add(
        &mut self,
        id: RequestId,
        request: Request,
        sink: UnboundedSender<RequestOutput>,
        arrival: Instant,
    ) {
        let params = Arc::new(request.params);
        let order = QueueOrder {
            priority: request.priority,
            arrival: self.next_arrival,
        };
        self.next_arrival += 1;
        let seq = self.new_seq(
            id,
            0,
            &params,
            order,
            request.prompt_token_ids.clone(),
            Vec::new(),
        );
        self.requests.insert(
            id,
            RequestState {
                sink,
                forked: params.n == 1,
                params,
                order,
                prompt: request.prompt_token_ids,
                seqs: vec![seq],
                admitted: false,
                completion_tokens: 0,
                cached_prompt_tokens: 0,
                arrival,
                scheduled: None,
                first_token: None,
            },
        );
    }

    /// Drops a request and frees its blocks.
    pub fn abort(&mut self, id: RequestId) {
        if let Some(state) = self.requests.remove(&id) {
            for seq in state.seqs {
                self.scheduler.remove(seq);
                self.samples.remove(&seq);
            }
            if state.admitted {
                self.num_admitted -= 1;
            } else {
                (self.on_admit)();
            }
            self.publish_gauges();
        }
    }

    /// Copies the gauges into the stats, so clients can see blocks come back
    /// and requests leave (a disconnect's abort happens between steps).
    fn publish_gauges(&self) {
        let s = &self.stats;
        let free = self.scheduler.pool().num_free() as u64;
        s.free_blocks.store(free, Ordering::Relaxed);
        s.running_requests
            .store(self.num_admitted, Ordering::Relaxed);
    }

    /// Runs one step. Returns whether there was work.
    pub fn step(&mut self) -> bool {
        let start = Instant::now();
        let plan = self.scheduler.schedule();
        if plan.is_empty() {
            return false;
        }
        let mut batch = Batch::default();
        // The plan's entries that made it into the batch, in batch order: a
        // row of logits belongs to the chunk at the same place.
        let mut planned = Vec::with_capacity(plan.len());
        let mut shape = StepShape::default();
        for p in plan {
            let Some(seq) = self.scheduler.get(p.seq) else {
                // The scheduler plans only sequences it holds; if that ever
                // breaks, leaving this one out keeps the others in step.
                tracing::error!(
                    seq = p.seq,
                    "the scheduler planned a sequence it does not hold"
                );
                continue;
            };
            let from = seq.num_computed;
            let to = from + p.num_tokens;
            shape.count(
                seq.priority,
                p.num_tokens,
                to == seq.tokens.len() && p.num_tokens == 1,
            );
            if from < seq.prompt_len {
                let computed = to.min(seq.prompt_len) - from;
                EngineStats::add(&self.stats.prompt_tokens_computed, computed as u64);
            }
            batch.chunks.push(SequenceChunk {
                token_ids: seq.tokens[from..to].to_vec(),
                start_position: from,
                block_table: seq.block_table.clone(),
                wants_logits: to == seq.tokens.len(),
            });
            self.note_admitted(p.seq);
            planned.push(p);
        }
        // Show the requests this step admitted while its forward runs.
        self.publish_gauges();
        let forward_start = Instant::now();
        let result = self.execute_with_masks(&planned, &batch);
        let forward = forward_start.elapsed();
        match result {
            Ok(logits) => self.on_forward(&planned, &batch, logits),
            Err(e) => self.fail_all(&planned, &format!("model forward failed: {e}")),
        }
        let s = &self.stats;
        EngineStats::add(&s.steps, 1);
        s.preemptions
            .store(self.scheduler.num_preemptions(), Ordering::Relaxed);
        let prefix = self.scheduler.prefix_cache_stats();
        let block_size = self.scheduler.pool().block_size() as u64;
        s.prefix_cache_queries
            .store(prefix.queried_blocks * block_size, Ordering::Relaxed);
        s.prefix_cache_hits
            .store(prefix.hit_blocks * block_size, Ordering::Relaxed);
        self.publish_gauges();
        let step_nanos = start.elapsed().as_nanos() as u64;
        EngineStats::add(&s.forward_nanos, forward.as_nanos() as u64);
        EngineStats::add(&s.step_nanos, step_nanos);
        s.last_step_nanos.store(step_nanos, Ordering::Relaxed);
        tracing::debug!(
            target: "tessera_engine::step",
            interactive_prefill_tokens = shape.interactive_prefill,
            interactive_decodes = shape.interactive_decodes,
            batch_prefill_tokens = shape.batch_prefill,
            batch_decodes = shape.batch_decodes,
            waiting = self.scheduler.num_waiting(),
            forward_us = forward.as_micros() as u64,
            step_us = step_nanos / 1000,
            "step"
        );
        true
    }

    /// Runs the forward pass while another thread computes the constraint
    /// masks of the constrained sequences that will sample this step, so a
    /// batch pays for its masks only where they take longer than the forward.
    fn execute_with_masks(
        &mut self,
        planned: &[Scheduled],
        batch: &Batch,
    ) -> Result<Logits, R::Error> {
        let constrained: Vec<SeqId> = planned
            .iter()
            .zip(&batch.chunks)
            .filter(|(p, c)| {
                c.wants_logits
                    && self
                        .samples
                        .get(&p.seq)
                        .is_some_and(|s| s.constraint.is_some())
            })
            .map(|(p, _)| p.seq)
            .collect();
        if constrained.is_empty() {
            return self.runner.execute(batch);
        }
        let (runner, samples) = (&mut self.runner, &mut self.samples);
        std::thread::scope(|scope| {
            let masks = scope.spawn(|| {
                for id in &constrained {
                    if let Some(sample) = samples.get_mut(id) {
                        sample.prepare_mask();
                    }
                }
            });
            let result = runner.execute(batch);
            // A panic in the grammar engine leaves masks unready; the
            // sampling step computes (and reports) them itself.
            let _ = masks.join();
            result
        })
    }

    /// Takes the forward's logits: checks their shape, then samples each
    /// sequence that asked for a row. Logits that break the runner's
    /// contract fail the requests they belong to (all of the batch's when
    /// rows cannot be matched to sequences) and the others carry on.
    fn on_forward(&mut self, planned: &[Scheduled], batch: &Batch, mut logits: Logits) {
        let wanted = batch.chunks.iter().filter(|c| c.wants_logits).count();
        if let Err(e) = check_shape(&logits, wanted) {
            self.fail_all(planned, &e);
            return;
        }
        let mut row = 0;
        for (p, chunk) in planned.iter().zip(&batch.chunks) {
            if !chunk.wants_logits {
                self.scheduler.mark_computed(p.seq, p.num_tokens);
                continue;
            }
            let logits = logits.row_mut(row);
            row += 1;
            if let Err(e) = check_finite(logits) {
                // Before marking the chunk computed, so blocks whose KV may be
                // just as broken never reach the prefix cache.
                if let Some(request) = self.samples.get(&p.seq).map(|s| s.request) {
                    self.fail(request, &e);
                }
                continue;
            }
            self.scheduler.mark_computed(p.seq, p.num_tokens);
            match self.config.task {
                EngineTask::Generate => self.on_logits(p.seq, logits),
                EngineTask::Embed => self.on_embedding(p.seq, logits),
            }
        }
    }

    /// Sends an embedding request its vector (the runner's row) and ends it,
    /// freeing its blocks.
    fn on_embedding(&mut self, seq_id: SeqId, row: &[f32]) {
        let Some(request) = self.samples.get(&seq_id).map(|s| s.request) else {
            return;
        };
        let Some(state) = self.requests.get_mut(&request) else {
            return;
        };
        let now = Instant::now();
        state.first_token.get_or_insert(now);
        let output = RequestOutput {
            embedding: Some(row.to_vec()),
            finish_reason: Some(FinishReason::Stop),
            usage: Some(Usage {
                prompt_tokens: state.prompt.len(),
                completion_tokens: 0,
                cached_prompt_tokens: 0,
            }),
            timings: Some(state.timings(now)),
            ..RequestOutput::default()
        };
        // Whether or not the client is still there, the request is complete.
        let _ = state.sink.send(output);
        self.abort(request);
    }

    /// Fails every request with a sequence in `planned`.
    fn fail_all(&mut self, planned: &[Scheduled], message: &str) {
        let mut ids: Vec<RequestId> = planned
            .iter()
            .filter_map(|p| self.samples.get(&p.seq).map(|s| s.request))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            self.fail(id, message);
        }
    }

    fn note_admitted(&mut self, seq: SeqId) {
        let Some(sample) = self.samples.get(&seq) else {
            return;
        };
        let Some(state) = self.requests.get_mut(&sample.request) else {
            return;
        };
        if !state.admitted {
            state.admitted = true;
            state.scheduled = Some(Instant::now());
            self.num_admitted += 1;
            let cached = self
                .scheduler
                .get(seq)
                .map_or(0, |s| s.cached_prompt_tokens);
            state.cached_prompt_tokens = cached;
            EngineStats::add(&self.stats.prompt_tokens_cached, cached as u64);
            (self.on_admit)();
        }
    }

    /// Samples the next token of `seq` and sends what it produced.
    ///
    /// The sampler's logit processors edit `logits` in place and restore it.
    fn on_logits(&mut self, seq_id: SeqId, logits: &mut [f32]) {
        let Some(seq) = self.scheduler.get(seq_id) else {
            return;
        };
        let Some(sample) = self.samples.get_mut(&seq_id) else {
            return;
        };
        sample.prepare_mask();
        if let Some(e) = sample.mask_error.take() {
            let request = sample.request;
            self.fail(request, &format!("structured output failed: {e}"));
            return;
        }
        let allowed = sample.constraint.is_some().then_some(&sample.mask[..]);
        let sampled = sample.sampler.sample_masked(
            logits,
            &seq.tokens[..seq.prompt_len],
            seq.output(),
            &self.config.eos_token_ids,
            allowed,
        );
        sample.mask_ready = false;
        let request = sample.request;
        if let Some(c) = sample.constraint.as_mut() {
            if let Err(e) = c.commit(sampled.token) {
                self.fail(request, &format!("structured output failed: {e}"));
                return;
            }
        }
        let Some(seq) = self.scheduler.get_mut(seq_id) else {
            return;
        };
        seq.tokens.push(sampled.token);
        let num_output = seq.tokens.len() - seq.prompt_len;
        let at_limit = seq.tokens.len() >= self.max_len;
        EngineStats::add(&self.stats.generated_tokens, 1);
        self.fork_samples(request, seq_id);

        let decoder = self.decoder.clone();
        let Some(sample) = self.samples.get_mut(&seq_id) else {
            return;
        };
        let index = sample.index;
        let effect = match sample.on_token(
            &*decoder,
            sampled.token,
            num_output,
            at_limit,
            &self.config.eos_token_ids,
        ) {
            Ok(effect) => effect,
            Err(e) => {
                self.fail(request, &format!("detokenization failed: {e}"));
                return;
            }
        };
        let logprobs = match sampled.logprob {
            Some(logprob) => vec![TokenLogprob {
                token: sampled.token,
                logprob,
                top: sampled.top_logprobs,
            }],
            None => Vec::new(),
        };
        let Some(state) = self.requests.get_mut(&request) else {
            return;
        };
        state.completion_tokens += 1;
        let now = Instant::now();
        state.first_token.get_or_insert(now);
        let mut output = RequestOutput {
            index,
            text: effect.text,
            token_ids: vec![sampled.token],
            logprobs,
            ..RequestOutput::default()
        };
        if let Some((reason, stop)) = effect.finish {
            output.finish_reason = Some(reason);
            output.stop_reason = stop;
            state.seqs.retain(|&s| s != seq_id);
            self.scheduler.remove(seq_id);
            self.samples.remove(&seq_id);
            if state.seqs.is_empty() && state.forked {
                output.usage = Some(Usage {
                    prompt_tokens: state.prompt.len(),
                    completion_tokens: state.completion_tokens,
                    cached_prompt_tokens: state.cached_prompt_tokens,
                });
                output.timings = Some(state.timings(now));
            }
        }
        let done = output.usage.is_some();
        if state.sink.send(output).is_err() || done {
            // The receiver is gone (client left), or the request is complete.
            self.abort(request);
        }
    }

    /// After the first sample's prompt is computed, starts the other `n - 1`
    /// sharing its full prompt blocks.
    fn fork_samples(&mut self, request: RequestId, leader: SeqId) {
        let block_size = self.scheduler.pool().block_size();
        let Some(state) = self.requests.get(&request) else {
            return;
        };
        if state.forked {
            return;
        }
        let (params, order, prompt) = (state.params.clone(), state.order, state.prompt.clone());
        let shared_blocks = (prompt.len() - 1) / block_size;
        let mut new = Vec::new();
        for index in 1..params.n {
            let blocks = self.scheduler.share_blocks(leader, shared_blocks);
            new.push(self.new_seq(request, index, &params, order, prompt.clone(), blocks));
        }
        if let Some(state) = self.requests.get_mut(&request) {
            state.forked = true;
            state.seqs.extend(new);
        }
    }

    fn new_seq(
        &mut self,
        request: RequestId,
        index: usize,
        params: &Arc<SamplingParams>,
        order: QueueOrder,
        prompt: Vec<u32>,
        shared_blocks: Vec<u32>,
    ) -> SeqId {
        let id = self.next_seq;
        self.next_seq += 1;
        let block_size = self.scheduler.pool().block_size();
        self.samples.insert(
            id,
            SampleState::new(request, index, params.clone(), &prompt),
        );
        self.scheduler.add(Sequence::new(
            id,
            order.priority,
            order.arrival,
            prompt,
            shared_blocks,
            block_size,
        ));
        id
    }

    /// Ends a request with an error message on its stream (the server makes
    /// it a 500 or an error event), frees its blocks, logs it and counts it.
    fn fail(&mut self, request: RequestId, message: &str) {
        if let Some(state) = self.requests.get(&request) {
            tracing::error!(request, "engine failed a request: {message}");
            EngineStats::add(&self.stats.failed_requests, 1);
            let _ = state.sink.send(RequestOutput {
                finish_reason: Some(FinishReason::Abort),
                error: Some(message.to_string()),
                ..RequestOutput::default()
            });
        }
        self.abort(request);
    }
}

/// The window behind which the engine releases KV blocks: the model's, when
/// generating (an embedding request keeps nothing anyway).
fn sliding_window(runner: &impl Runner, config: &EngineConfig) -> Option<usize> {
    runner
        .sliding_window()
        .filter(|_| config.task == EngineTask::Generate)
}

/// The longest sequence the engine runs: the model's context, or what the
/// KV pool holds if that is smaller. With a sliding window a sequence holds
/// only its window and one step's tokens, so a pool holding that (beside the
/// null block) runs the model's whole context.
pub(super) fn max_sequence_len(runner: &impl Runner, config: &EngineConfig) -> usize {
    let (num_blocks, block_size) = (runner.num_blocks(), runner.block_size());
    let window = sliding_window(runner, config).and_then(|w| SlidingWindow::new(w, block_size));
    let Some(window) = window else {
        return runner.max_model_len().min(num_blocks * block_size);
    };
    let usable = num_blocks.saturating_sub(1);
    if usable >= window.max_blocks_held(config.max_num_batched_tokens.max(1)) {
        runner.max_model_len()
    } else {
        runner.max_model_len().min(usable * block_size)
    }
}

/// What one step computed, by class: prompt tokens (chunks) and decode rows.
#[derive(Debug, Default)]
struct StepShape {
    interactive_prefill: usize,
    interactive_decodes: usize,
    batch_prefill: usize,
    batch_decodes: usize,
}

impl StepShape {
    fn count(&mut self, priority: Priority, num_tokens: usize, decode: bool) {
        let (prefill, decodes) = match priority {
            Priority::Interactive => (&mut self.interactive_prefill, &mut self.interactive_decodes),
            Priority::Batch => (&mut self.batch_prefill, &mut self.batch_decodes),
        };
        if decode {
            *decodes += 1;
        } else {
            *prefill += num_tokens;
        }
    }
}
