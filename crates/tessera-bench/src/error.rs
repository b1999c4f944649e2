//! The library's error type. Per-request failures are not errors: they are
//! data ([`crate::record::Failure`]), counted and reported.

use std::path::PathBuf;

/// Why a benchmark could not run or report.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An option's value, or a combination of options, that cannot work.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A dataset file with content the benchmark cannot use.
    #[error("{path}:{line}: {message}")]
    Dataset {
        /// The file.
        path: PathBuf,
        /// 1-based line (JSONL) or entry (JSON array) number; 0 for the whole file.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// Tokenizing or detokenizing failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The server could not be used at all (not a per-request failure).
    #[error("{url}: {message}")]
    Server {
        /// The URL that failed.
        url: String,
        /// What happened.
        message: String,
    },
    /// Every warm-up request failed: the measured run would fail the same way.
    #[error("every warm-up request failed, so the benchmark did not start; the first: {0}")]
    WarmupFailed(String),
    /// A JSON report that cannot be read back.
    #[error("{path}: not a tessera bench JSON report: {source}")]
    Report {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// Drawing the plot failed.
    #[error("plot {path}: {message}")]
    Plot {
        /// The PNG being written.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The library's result type.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;

impl BenchError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
