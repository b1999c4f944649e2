//! Batch inference, OpenAI's Files and Batches APIs: JSONL files of
//! requests are uploaded, run at batch priority through the same handlers as
//! online requests, and answered in output files. Everything is kept in a
//! [`tessera_store::Store`], so batches outlive the process: after a crash
//! the lines without a recorded result run again, and only those.

mod batches_api;
mod dispatch;
mod files_api;
mod shapes;
mod validate;
mod worker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use ring::digest::{digest, SHA256};
use tessera_store::{Store, StoreError};
use tokio::sync::Notify;

use crate::error::ApiError;
use crate::state::AppState;

pub use batches_api::ENDPOINTS;
pub use batches_api::{cancel_batch, create_batch, list_batches, retrieve_batch};
pub use dispatch::{dispatch, Dispatcher, LineOutcome};
pub use files_api::{delete_file, file_content, list_files, retrieve_file, upload_file};
pub use validate::{parse_lines, LineError, ValidLine};

/// Default largest upload (OpenAI's limit for batch input files).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 200 << 20;

/// The only completion window OpenAI offers.
pub const COMPLETION_WINDOW: &str = "24h";

/// How batches are stored and run.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchConfig {
    /// Where files and batches are kept; `None`: the Files and Batches APIs
    /// are off.
    pub data_dir: Option<PathBuf>,
    /// Whether `data_dir` is only a default: when it cannot be opened (say,
    /// another process holds it), the server runs without the Files and
    /// Batches APIs (and says so in its log) instead of refusing to start.
    pub data_dir_is_default: bool,
    /// Largest upload (413 beyond it).
    pub max_file_bytes: u64,
    /// How long a batch may run before it expires: the completion window
    /// (24 hours) unless set shorter (for tests and small deployments).
    pub window: Duration,
    /// Lines of batches in flight at once. The engine's own rule (at most
    /// `--batch-max-running` batch sequences running, preempted first) keeps
    /// interactive requests ahead; this only bounds the queue batch work
    /// keeps in the engine.
    pub concurrency: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            data_dir_is_default: false,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            window: Duration::from_secs(24 * 3600),
            concurrency: 8,
        }
    }
}

/// The batch service: the store and the worker that runs batches.
#[derive(Debug)]
pub struct Batches {
    store: Arc<Store>,
    config: BatchConfig,
    wake: Notify,
    started: AtomicBool,
    /// The batch the worker is on: a cancelled batch that is not it (one
    /// queued behind it) is ended by the cancel itself, not when the worker
    /// gets to it.
    current: std::sync::Mutex<Option<String>>,
}

impl Batches {
    /// The service over the store in `config.data_dir` (`None` when no data
    /// directory is set).
    pub fn open(config: &BatchConfig) -> Result<Option<Arc<Self>>, StoreError> {
        let Some(dir) = &config.data_dir else {
            return Ok(None);
        };
        let store = match Store::open(dir) {
            // Only a directory asked for is a reason not to start.
            Err(e) if config.data_dir_is_default => {
                tracing::warn!(
                    "the Files and Batches APIs are off: the default data directory {}: {e} \
                     (give this process its own with --data-dir)",
                    dir.display()
                );
                return Ok(None);
            }
            other => other?,
        };
        Ok(Some(Arc::new(Self {
            store: Arc::new(store),
            config: config.clone(),
            wake: Notify::new(),
            started: AtomicBool::new(false),
            current: std::sync::Mutex::new(None),
        })))
    }

    /// Starts the worker (once): it resumes unfinished batches first.
    pub fn start(self: &Arc<Self>, state: AppState) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(worker::run(self.clone(), state));
    }

    fn set_current(&self, id: Option<&str>) {
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = id.map(str::to_string);
    }

    fn is_current(&self, id: &str) -> bool {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_deref()
            == Some(id)
    }

    /// Runs a store call on a blocking thread.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ApiError::internal(format!("storage task: {e}")))?
            .map_err(|e| {
                tracing::error!("storage: {e}");
                ApiError::internal(format!("storage: {e}"))
            })
    }
}

/// The batch service of `state`, or why there is none.
fn service(state: &AppState) -> Result<&Arc<Batches>, ApiError> {
    state.batches.as_ref().ok_or_else(|| ApiError {
        status: StatusCode::NOT_FOUND,
        ..ApiError::bad_request(
            "The Files and Batches APIs are off: start the server with --data-dir to use them.",
        )
    })
}

/// Who owns what a request creates: the digest of its API key (so that
/// reordering or adding keys changes nothing), or everyone when the server
/// has no keys.
fn owner(state: &AppState, headers: &HeaderMap) -> String {
    match crate::auth::bearer(headers) {
        Some(token) if state.api_keys.is_enabled() => {
            let d = digest(&SHA256, token);
            d.as_ref()[..16]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        }
        _ => "anonymous".to_string(),
    }
}

/// 404 for an object that does not exist or belongs to someone else.
fn not_found(kind: &str, id: &str) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        ..ApiError::bad_request(format!("No such {kind} object: {id}"))
    }
}

/// A `limit` query parameter: 1 to 100, default 20 (OpenAI's).
fn page_limit(limit: Option<i64>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(20),
        Some(n @ 1..=100) => Ok(n as usize),
        Some(n) => Err(ApiError::invalid_param(
            "limit",
            format!("limit must be between 1 and 100, got {n}"),
        )),
    }
}
