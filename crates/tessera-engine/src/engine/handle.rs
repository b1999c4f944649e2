//! The engine thread and the handle clients use to reach it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::core::{max_sequence_len, EngineCore};
use super::{EngineConfig, EngineStats, EngineTask, StatsSnapshot};
use crate::detokenize::TokenDecoder;
use crate::request::{Request, RequestId, RequestOutput};
use crate::runner::Runner;
use crate::sampling::SamplingError;

/// Why a request was not accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    /// The waiting queue is full: try again later (HTTP 429).
    #[error("the engine is overloaded: {0} requests are already waiting")]
    QueueFull(usize),
    /// The request can never run (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// A sampling parameter is out of range (HTTP 400).
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    /// The engine thread has stopped.
    #[error("the engine has shut down")]
    Shutdown,
}

enum Command {
    Add {
        id: RequestId,
        request: Box<Request>,
        sink: UnboundedSender<RequestOutput>,
        /// When `submit` accepted it (queue time starts here, not when the
        /// engine thread gets to the command).
        arrival: Instant,
    },
    Abort(RequestId),
}

/// Limits a request is checked against before it is queued.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_len: usize,
    vocab_size: usize,
    max_waiting: usize,
    task: EngineTask,
}

struct Shared {
    limits: Limits,
    waiting: AtomicUsize,
    next_id: AtomicU64,
    stats: Arc<EngineStats>,
    exit: EngineExit,
}

/// Tells when an engine thread has ended and its model and KV cache are
/// freed: after every handle and stream is dropped and the work in flight
/// finished. Holding it keeps nothing alive.
#[derive(Clone, Default)]
pub struct EngineExit {
    state: Arc<(Mutex<bool>, Condvar)>,
}

impl EngineExit {
    /// Whether the engine thread has ended.
    pub fn has_exited(&self) -> bool {
        *self.state.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Blocks until the engine thread ends or `timeout` passes; true if it ended.
    pub fn wait(&self, timeout: Duration) -> bool {
        let (lock, cond) = &*self.state;
        let exited = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let (exited, _) = cond
            .wait_timeout_while(exited, timeout, |exited| !*exited)
            .unwrap_or_else(PoisonError::into_inner);
        *exited
    }

    fn mark_exited(&self) {
        let (lock, cond) = &*self.state;
        *lock.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cond.notify_all();
    }
}

/// Owned by the engine thread: marks the exit when the thread's state
/// (model, KV cache) has been dropped, however the thread ends.
struct ExitGuard(EngineExit);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.0.mark_exited();
    }
}

/// A cheap, cloneable way in to the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

/// Starts the engine loop on its own thread. It runs until every handle and
/// stream is dropped.
pub fn spawn<R, D>(
    runner: R,
    decoder: Arc<D>,
    config: EngineConfig,
) -> std::io::Result<EngineHandle>
where
    R: Runner + 'static,
    D: TokenDecoder + Send + Sync + 'static,
{
    let stats = Arc::new(EngineStats::default());
    let shared = Arc::new(Shared {
        limits: Limits {
            max_len: max_sequence_len(&runner, &config),
            vocab_size: config.vocab_size,
            max_waiting: config.max_waiting_requests,
            task: config.task,
        },
        waiting: AtomicUsize::new(0),
        next_id: AtomicU64::new(0),
        stats: stats.clone(),
        exit: EngineExit::default(),
    });
    let (tx, rx) = mpsc::channel();
    let admitted = shared.clone();
    let on_admit = Box::new(move || {
        admitted.waiting.fetch_sub(1, Ordering::AcqRel);
    });
    let core = EngineCore::new(runner, decoder, config, stats, on_admit);
    let guard = ExitGuard(shared.exit.clone());
    std::thread::Builder::new()
        .name("tessera-engine".into())
        .spawn(move || {
            // Declared first, dropped last: the exit is marked after the
            // core (model and KV cache) is freed.
            let _guard = guard;
            let mut core = core;
            run_loop(&mut core, &rx);
        })?;
    Ok(EngineHandle { tx, shared })
}

fn run_loop<R: Runner, D: TokenDecoder>(core: &mut EngineCore<R, D>, rx: &mpsc::Receiver<Command>) {
    loop {
        if core.is_idle() {
            match rx.recv() {
                Ok(cmd) => apply(core, cmd),
                Err(_) => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(cmd) => apply(core, cmd),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) if core.is_idle() => return,
                Err(mpsc::TryRecvError::Disconnected) => break,
            }
        }
        core.step();
    }
}

fn apply<R: Runner, D: TokenDecoder>(core: &mut EngineCore<R, D>, cmd: Command) {
    match cmd {
        Command::Add {
            id,
            request,
            sink,
            arrival,
        } => core.add(id, *request, sink, arrival),
        Command::Abort(id) => core.abort(id),
    }
}

impl EngineHandle {
    /// Checks and queues a request; its outputs arrive on the returned stream.
    /// Fails fast when the waiting queue is full or the request can never run.
    pub fn submit(&self, request: Request) -> Result<OutputStream, SubmitError> {
        let limits = self.shared.limits;
        let prompt = &request.prompt_token_ids;
        if prompt.is_empty() {
            return Err(SubmitError::Invalid("the prompt is empty".into()));
        }
        match limits.task {
            EngineTask::Generate if prompt.len() >= limits.max_len => {
                return Err(SubmitError::Invalid(format!(
                    "the prompt has {} tokens, but this model's context (or KV cache) holds {} \
                     including at least one generated token",
                    prompt.len(),
                    limits.max_len
                )));
            }
            EngineTask::Embed if prompt.len() > limits.max_len => {
                return Err(SubmitError::Invalid(format!(
                    "the input has {} tokens, but this model takes at most {}",
                    prompt.len(),
                    limits.max_len
                )));
            }
            _ => {}
        }
        if let Some(bad) = prompt.iter().find(|&&t| t as usize >= limits.vocab_size) {
            return Err(SubmitError::Invalid(format!(
                "prompt token id {bad} is outside the vocabulary of {} tokens",
                limits.vocab_size
            )));
        }
        request.params.validate(limits.vocab_size)?;
        let waiting = self.shared.waiting.fetch_add(1, Ordering::AcqRel);
        if waiting >= limits.max_waiting {
            self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(SubmitError::QueueFull(waiting));
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (sink, rx) = unbounded_channel();
        if self
            .tx
            .send(Command::Add {
                id,
                request: Box::new(request),
                sink,
                arrival: Instant::now(),
            })
            .is_err()
        {
            self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(SubmitError::Shutdown);
        }
        Ok(OutputStream {
            id,
            rx,
            tx: self.tx.clone(),
            finished: false,
        })
    }

    /// Whether this engine generates text or computes embeddings.
    pub fn task(&self) -> EngineTask {
        self.shared.limits.task
    }

    /// The engine's counters and gauges.
    pub fn stats(&self) -> StatsSnapshot {
        StatsSnapshot {
            waiting_requests: self.shared.waiting.load(Ordering::Acquire) as u64,
            ..self.shared.stats.snapshot()
        }
    }

    /// Longest sequence (prompt plus output) a request may reach.
    pub fn max_len(&self) -> usize {
        self.shared.limits.max_len
    }

    /// Requests queued but not yet started.
    pub fn num_waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::Acquire)
    }

    /// Whether no request is waiting or running.
    pub fn is_idle(&self) -> bool {
        self.num_waiting() == 0 && self.shared.stats.running_requests.load(Ordering::Acquire) == 0
    }

    /// What tells when this engine's thread has ended.
    pub fn exit(&self) -> EngineExit {
        self.shared.exit.clone()
    }
}

/// The outputs of one request. Dropping it before the end aborts the request.
pub struct OutputStream {
    id: RequestId,
    rx: UnboundedReceiver<RequestOutput>,
    tx: mpsc::Sender<Command>,
    finished: bool,
}

impl OutputStream {
    /// The request's id.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// The next output, or `None` after the last.
    pub async fn next(&mut self) -> Option<RequestOutput> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The next output, blocking the thread (not for async contexts).
    pub fn blocking_next(&mut self) -> Option<RequestOutput> {
        let out = self.rx.blocking_recv();
        self.observe(out)
    }

    /// Polls for the next output.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<RequestOutput>> {
        self.rx.poll_recv(cx).map(|out| self.observe(out))
    }

    fn observe(&mut self, out: Option<RequestOutput>) -> Option<RequestOutput> {
        match &out {
            Some(o) if o.usage.is_some() || o.error.is_some() => self.finished = true,
            None => self.finished = true,
            _ => {}
        }
        out
    }
}

impl Drop for OutputStream {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.tx.send(Command::Abort(self.id));
        }
    }
}
