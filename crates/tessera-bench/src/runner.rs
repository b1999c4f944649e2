//! One run: warm-up requests (not measured), then the workload released on
//! its arrival schedule, each request waiting for a `--max-concurrency` slot
//! (FIFO) before it is sent, as vLLM's benchmark does. TTFT and latency count
//! from the send; the wait for a slot shows as `sent_s - scheduled_s`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::{self, Outcome, Target};
use crate::error::{BenchError, Result};
use crate::record::RequestRecord;
use crate::schedule::arrival_offsets;
use crate::sweep::Point;
use crate::workload::WorkItem;

/// How requests are released and shown.
#[derive(Debug, Clone, Copy)]
pub struct RunSettings {
    /// The arrival rate and concurrency cap.
    pub point: Point,
    /// Gamma shape of the gaps between arrivals (1 = Poisson).
    pub burstiness: f64,
    /// Seed of the arrival schedule.
    pub seed: u64,
    /// Draw a progress bar (on a terminal only in any case).
    pub progress: bool,
}

/// The measurements of one run.
#[derive(Debug, Clone)]
pub struct PointRun {
    /// One record per workload request, in workload order.
    pub records: Vec<RequestRecord>,
    /// From the first arrival to the last completion, seconds.
    pub duration_s: f64,
    /// Most requests in flight at once.
    pub peak_concurrency: usize,
    /// Warm-up requests sent before the run.
    pub warmup_requests: usize,
    /// How many of them failed.
    pub warmup_failures: usize,
}

/// Runs `warmup` (all at once under the concurrency cap; fails if every one
/// fails, as the run would), then measures `items`.
pub async fn run_point(
    client: &reqwest::Client,
    target: &Arc<Target>,
    warmup: &[WorkItem],
    items: &[WorkItem],
    settings: RunSettings,
) -> Result<PointRun> {
    let warmup_failures = warm_up(client, target, warmup, settings.point.max_concurrency).await?;
    let offsets = arrival_offsets(
        items.len(),
        settings.point.request_rate,
        settings.burstiness,
        settings.seed,
    )?;
    let bar = progress_bar(items.len(), settings);
    let slots = settings
        .point
        .max_concurrency
        .map(|c| Arc::new(Semaphore::new(c)));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));

    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (index, (item, offset)) in items.iter().zip(offsets).enumerate() {
        tokio::time::sleep_until((start + offset).into()).await;
        let scheduled_s = start.elapsed().as_secs_f64();
        let body = target.body(item);
        let (client, target, slots) = (client.clone(), target.clone(), slots.clone());
        let (in_flight, peak, failed, bar) =
            (in_flight.clone(), peak.clone(), failed.clone(), bar.clone());
        let (prompt_len, output_len) = (item.prompt_len, item.output_len);
        tasks.spawn(async move {
            let _slot = match &slots {
                Some(s) => s.clone().acquire_owned().await.ok(),
                None => None,
            };
            let sent_s = start.elapsed().as_secs_f64();
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let outcome = client::send(&client, &target, &body).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            if outcome.error.is_some() {
                let n = failed.fetch_add(1, Ordering::SeqCst) + 1;
                bar.set_message(format!("{n} failed"));
            }
            bar.inc(1);
            record(index, prompt_len, output_len, scheduled_s, sent_s, outcome)
        });
    }
    let mut records = Vec::with_capacity(items.len());
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(r) => records.push(r),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => {
                return Err(BenchError::Usage(format!(
                    "a request task was cancelled: {e}"
                )))
            }
        }
    }
    let duration_s = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    records.sort_by_key(|r| r.index);
    Ok(PointRun {
        records,
        duration_s,
        peak_concurrency: peak.load(Ordering::SeqCst),
        warmup_requests: warmup.len(),
        warmup_failures,
    })
}

/// Sends the warm-up requests; returns how many failed, or an error when all did.
async fn warm_up(
    client: &reqwest::Client,
    target: &Arc<Target>,
    warmup: &[WorkItem],
    cap: Option<usize>,
) -> Result<usize> {
    let slots = Arc::new(Semaphore::new(cap.unwrap_or(warmup.len()).max(1)));
    let mut tasks = JoinSet::new();
    for item in warmup {
        let body = target.body(item);
        let (client, target, slots) = (client.clone(), target.clone(), slots.clone());
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await.ok();
            client::send(&client, &target, &body).await
        });
    }
    let mut errors = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(outcome) => errors.extend(outcome.error),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => {
                return Err(BenchError::Usage(format!(
                    "a warm-up task was cancelled: {e}"
                )))
            }
        }
    }
    if !warmup.is_empty() && errors.len() == warmup.len() {
        let first = &errors[0];
        return Err(BenchError::WarmupFailed(format!(
            "{}: {}",
            first.kind, first.message
        )));
    }
    Ok(errors.len())
}

/// The progress bar's layout: the run, the bar, counts, times, failures.
const PROGRESS_TEMPLATE: &str =
    "{prefix} {bar:30} {pos}/{len} requests [{elapsed_precise}, eta {eta}] {msg}";

fn progress_bar(len: usize, settings: RunSettings) -> ProgressBar {
    if !settings.progress {
        return ProgressBar::hidden();
    }
    // indicatif draws to stderr only when it is a terminal.
    let bar = ProgressBar::new(len as u64);
    let style = ProgressStyle::with_template(PROGRESS_TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(settings.point.to_string());
    bar
}

fn record(
    index: usize,
    prompt_len: usize,
    output_len: usize,
    scheduled_s: f64,
    sent_s: f64,
    o: Outcome,
) -> RequestRecord {
    RequestRecord {
        index,
        prompt_len,
        output_len,
        scheduled_s,
        sent_s,
        ttft_s: o.ttft_s,
        latency_s: o.latency_s,
        itl_s: o.itl_s,
        output_tokens: o.output_tokens,
        output_tokens_source: o.output_tokens_source,
        prompt_tokens: o.prompt_tokens,
        finish_reason: o.finish_reason,
        text: o.text,
        error: o.error,
        resends: o.resends,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_progress_template_parses() {
        // A bad template would silently fall back to indicatif's default bar.
        assert!(indicatif::ProgressStyle::with_template(super::PROGRESS_TEMPLATE).is_ok());
    }
}
