//! What a benchmark reports: the JSON document (every request record and the
//! summaries, readable back for `tessera bench compare`), the tables and the
//! plot.

mod plot;
mod table;

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use plot::plot;
pub use table::{latency_table, notes, throughput_table};

use crate::client::Api;
use crate::error::{BenchError, Result};
use crate::record::RequestRecord;
use crate::slo::Slo;
use crate::summary::Summary;
use crate::sweep::Point;

/// The settings of a benchmark invocation, as recorded in its report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The endpoint's URL.
    pub url: String,
    /// Its API.
    pub api: Api,
    /// The `model` sent.
    pub model: String,
    /// The dataset and its settings, in words.
    pub dataset: String,
    /// Where token counts came from.
    pub tokenizer: String,
    /// Measured requests per run.
    pub num_prompts: usize,
    /// Warm-up requests per run.
    pub warmup: usize,
    /// Whether `ignore_eos: true` was sent.
    pub ignore_eos: bool,
    /// `temperature` sent.
    pub temperature: f64,
    /// Extra body fields sent.
    pub extra_body: Map<String, Value>,
    /// Gamma shape of the arrival gaps.
    pub burstiness: f64,
    /// The seed.
    pub seed: u64,
    /// Per-request timeout, seconds.
    pub timeout_s: f64,
    /// Goodput objectives.
    pub slo: Option<Slo>,
    /// Notes on the workload (repeats, inexact lengths).
    pub workload_notes: Vec<String>,
}

/// One run of a benchmark (one sweep point).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointReport {
    /// What it was driven at.
    pub point: Point,
    /// Warm-up requests sent first (not in `requests`).
    pub warmup_requests: usize,
    /// How many of them failed.
    pub warmup_failures: usize,
    /// Its metrics.
    pub summary: Summary,
    /// Every request, failed ones included.
    pub requests: Vec<RequestRecord>,
}

/// The `--json` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Always "tessera bench".
    pub tool: String,
    /// The tessera-bench version that wrote it.
    pub version: String,
    /// The name of the server in tables and plots (`--label`).
    pub label: String,
    /// When the benchmark started, seconds since the Unix epoch.
    pub started_unix_s: u64,
    /// Its settings.
    pub config: RunConfig,
    /// Its runs, in order.
    pub points: Vec<PointReport>,
}

impl BenchReport {
    /// Writes the report as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| BenchError::Report {
            path: path.to_path_buf(),
            source: e,
        })?;
        std::fs::write(path, text + "\n").map_err(|e| BenchError::io(path, e))
    }

    /// Reads a report written by [`BenchReport::write`].
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| BenchError::Report {
            path: path.to_path_buf(),
            source: e,
        })
    }
}
