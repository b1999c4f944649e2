//! The worker: takes unfinished batches oldest first (after a restart, the
//! ones the last process left), validates their input, runs their pending
//! lines a few at a time, records each result as it arrives, and writes the
//! output files at the end. Cancel and expiry stop new lines from starting;
//! lines already running finish and are kept.

use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{Map, Value};
use tessera_manager::ResolveError;
use tessera_store::{BatchRecord, BatchStatus, NewFile, Store, StoreError};

use super::dispatch::{unrun_line, Dispatcher, LineOutcome};
use super::validate::parse_lines;
use super::Batches;
use crate::state::AppState;

/// How long the worker sleeps when nothing wakes it (a safety net: creating
/// or cancelling a batch wakes it at once).
const IDLE_POLL: Duration = Duration::from_secs(5);
/// Waits before a line refused for now (429 queue full, 503 not ready) is
/// tried again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// The worker's loop; it never returns.
pub async fn run(batches: Arc<Batches>, state: AppState) {
    let dispatcher = Dispatcher::new(state.clone());
    loop {
        while !state.is_ready() {
            tokio::time::sleep(RETRY_AFTER).await;
        }
        match batches.call(|s| s.unfinished_batches()).await {
            Ok(list) if !list.is_empty() => {
                for b in list {
                    batches.set_current(Some(&b.id));
                    let stepped = step(&batches, &state, &dispatcher, &b).await;
                    batches.set_current(None);
                    if let Err(e) = stepped {
                        tracing::error!(batch = %b.id, "batch step failed: {e}");
                        tokio::time::sleep(IDLE_POLL).await;
                    }
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::error!("listing batches: {}", e.message),
        }
        let _ = tokio::time::timeout(IDLE_POLL, batches.wake.notified()).await;
    }
}

/// Moves batch `b` on from where it is.
async fn step(
    batches: &Arc<Batches>,
    state: &AppState,
    dispatcher: &Dispatcher,
    b: &BatchRecord,
) -> Result<(), String> {
    match b.status {
        BatchStatus::Validating => validate(batches, state, b).await,
        BatchStatus::InProgress => run_lines(batches, dispatcher, b).await,
        BatchStatus::Finalizing => {
            finalize(batches, b, BatchStatus::Finalizing, BatchStatus::Completed).await
        }
        BatchStatus::Cancelling => {
            finalize(batches, b, BatchStatus::Cancelling, BatchStatus::Cancelled).await
        }
        _ => Ok(()),
    }
}

/// Reads the input file line by line and either stores its lines
/// (`in_progress`) or fails the batch with every problem found.
async fn validate(batches: &Arc<Batches>, state: &AppState, b: &BatchRecord) -> Result<(), String> {
    let models = state.models.clone();
    let b = b.clone();
    batches
        .call(move |store| {
            let Some(file) = store.file(&b.owner, &b.input_file_id)? else {
                let error = serde_json::json!([{
                    "code": "file_not_found",
                    "message": format!("The input file {} no longer exists.", b.input_file_id),
                    "param": "input_file_id",
                    "line": null,
                }]);
                return store.fail_batch(&b.id, &error);
            };
            let reader = std::fs::File::open(store.blob_path(&file.id))
                .map(BufReader::new)
                .map_err(|e| io_error("opening the input file", e))?;
            let raw: Vec<Vec<u8>> = reader
                .split(b'\n')
                .collect::<Result<_, _>>()
                .map_err(|e| io_error("reading the input file", e))?;
            let known = |model: Option<&str>| {
                !matches!(
                    models.resolve(model, None),
                    Err(ResolveError::UnknownModel(_)
                        | ResolveError::UnknownVersion { .. }
                        | ResolveError::UnknownAlias { .. })
                )
            };
            match parse_lines(raw, &[b.endpoint.as_str()], known) {
                Ok(lines) => {
                    let rows: Vec<_> = lines
                        .into_iter()
                        .map(|l| (l.line, l.custom_id, Value::Object(l.body).to_string()))
                        .collect();
                    store.start_batch(&b.id, &rows).map(drop)
                }
                Err(errors) => {
                    let data = Value::Array(errors.iter().map(|e| e.to_json()).collect());
                    store.fail_batch(&b.id, &data)
                }
            }
        })
        .await
        .map_err(|e| e.message)
}

/// Runs the lines without a result, `concurrency` at a time, until none is
/// left or the batch is cancelled or expires; then ends it.
async fn run_lines(
    batches: &Arc<Batches>,
    dispatcher: &Dispatcher,
    b: &BatchRecord,
) -> Result<(), String> {
    let id = b.id.clone();
    let pending = {
        let id = id.clone();
        batches
            .call(move |s| s.batch_lines(&id, true))
            .await
            .map_err(|e| e.message)?
    };
    let mut pending = pending.into_iter();
    let mut running = FuturesUnordered::new();
    let mut stopped = None;
    loop {
        while stopped.is_none() && running.len() < batches.config.concurrency.max(1) {
            if let Some(why) = stop_reason(batches, &id, b.expires_at).await? {
                stopped = Some(why);
                break;
            }
            let Some(line) = pending.next() else { break };
            let body: Map<String, Value> = serde_json::from_str(&line.body)
                .map_err(|e| format!("stored line {}: {e}", line.line))?;
            let dispatcher = dispatcher.clone();
            let endpoint = b.endpoint.clone();
            let expires_at = b.expires_at;
            running.push(async move {
                let outcome = run_line(&dispatcher, &endpoint, body, expires_at).await;
                (line, outcome)
            });
        }
        let Some((line, outcome)) = running.next().await else {
            break;
        };
        let Some(outcome) = outcome else {
            // Expired while waiting for room in the engine: it never ran.
            stopped.get_or_insert(BatchStatus::Expired);
            continue;
        };
        let result = outcome.to_line(&line.custom_id);
        let failed = !outcome.succeeded();
        let id = id.clone();
        batches
            .call(move |s| s.finish_line(&id, line.line, &result, failed))
            .await
            .map_err(|e| e.message)?;
    }
    match stopped {
        Some(BatchStatus::Cancelling) => {
            finalize(batches, b, BatchStatus::Cancelling, BatchStatus::Cancelled).await
        }
        Some(_) => finalize(batches, b, BatchStatus::InProgress, BatchStatus::Expired).await,
        None => {
            let id = id.clone();
            batches
                .call(move |s| {
                    s.set_batch_status(&id, &[BatchStatus::InProgress], BatchStatus::Finalizing)
                })
                .await
                .map_err(|e| e.message)?;
            // A cancel that came in meanwhile is finalized on the next pass.
            finalize(batches, b, BatchStatus::Finalizing, BatchStatus::Completed).await
        }
    }
}

/// Why no more lines of batch `id` may start: cancelled or expired.
async fn stop_reason(
    batches: &Arc<Batches>,
    id: &str,
    expires_at: i64,
) -> Result<Option<BatchStatus>, String> {
    if tessera_store::unix_now() >= expires_at {
        return Ok(Some(BatchStatus::Expired));
    }
    let id = id.to_string();
    let status = batches
        .call(move |s| s.batch_by_id(&id))
        .await
        .map_err(|e| e.message)?
        .map(|b| b.status);
    Ok(match status {
        Some(BatchStatus::InProgress) => None,
        Some(BatchStatus::Cancelling) | None => Some(BatchStatus::Cancelling),
        Some(other) => Some(other),
    })
}

/// Runs one line; a refusal for now (queue full, model not ready) is tried
/// again until the batch expires (`None` then).
async fn run_line(
    dispatcher: &Dispatcher,
    endpoint: &str,
    body: Map<String, Value>,
    expires_at: i64,
) -> Option<LineOutcome> {
    loop {
        let outcome = dispatcher.run(endpoint, body.clone()).await;
        if !matches!(outcome.status_code, 429 | 503) {
            return Some(outcome);
        }
        if tessera_store::unix_now() >= expires_at {
            return None;
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

/// Writes the output and error files of batch `b` and moves it from `from`
/// to `to`. Lines that never ran go to the error file, marked cancelled or
/// expired, so every input line has exactly one output line.
pub(super) async fn finalize(
    batches: &Arc<Batches>,
    b: &BatchRecord,
    from: BatchStatus,
    to: BatchStatus,
) -> Result<(), String> {
    let b = b.clone();
    batches
        .call(move |store| {
            let lines = store.batch_lines(&b.id, false)?;
            let (code, message) = match to {
                BatchStatus::Expired => (
                    "batch_expired",
                    "This request could not be executed before the completion window expired.",
                ),
                _ => (
                    "batch_cancelled",
                    "The batch was cancelled before this request ran.",
                ),
            };
            let mut ok = Vec::new();
            let mut errors = Vec::new();
            for l in &lines {
                match &l.result {
                    Some(r) if !l.failed => ok.push(r.clone()),
                    Some(r) => errors.push(r.clone()),
                    None => errors.push(unrun_line(&l.custom_id, code, message).to_string()),
                }
            }
            let output = write_file(store, &b, &ok, "output")?;
            let error = write_file(store, &b, &errors, "error")?;
            let (o, e) = store.end_batch(&b.id, &[from], to, output.as_ref(), error.as_ref())?;
            if o.is_none() && e.is_none() {
                // Moved meanwhile (a cancel during expiry): the next pass ends it.
                for f in output.iter().chain(&error) {
                    let _ = std::fs::remove_file(store.blob_path(&f.id));
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| e.message)
}

/// Commits a `batch_output` file of `lines` (none when empty).
fn write_file(
    store: &Store,
    b: &BatchRecord,
    lines: &[String],
    kind: &str,
) -> Result<Option<NewFile>, StoreError> {
    if lines.is_empty() {
        return Ok(None);
    }
    let id = crate::ids::new_id("file-");
    let mut w = store.blob_writer(&id)?;
    let mut buf = Vec::new();
    for line in lines {
        buf.clear();
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        w.write(&buf)?;
    }
    let bytes = w.commit()?;
    Ok(Some(NewFile {
        id,
        owner: b.owner.clone(),
        purpose: "batch_output".into(),
        filename: format!("{}_{kind}.jsonl", b.id),
        bytes,
    }))
}

fn io_error(what: &str, e: std::io::Error) -> StoreError {
    StoreError::Io {
        what: what.to_string(),
        source: e,
    }
}
