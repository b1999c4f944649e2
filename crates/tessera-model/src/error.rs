//! The model crate's error type. Every error that comes from a file names the file.

use std::path::PathBuf;

/// Result alias for the model crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// What can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file exists but its content is not what it should be.
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    /// The model's architecture is not one tessera implements.
    #[error("{path}: unsupported architecture '{arch}' (supported: {supported})")]
    UnknownArchitecture {
        path: PathBuf,
        arch: String,
        supported: String,
    },
    /// A tensor the architecture needs is absent.
    #[error("{path}: missing tensor '{name}'")]
    MissingTensor { path: PathBuf, name: String },
    /// A tensor has a shape other than the configuration implies.
    #[error("{path}: tensor '{name}' has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// A tensor is stored in a type tessera cannot compute with.
    #[error("{path}: tensor '{name}' has unsupported type {dtype}")]
    UnsupportedDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    /// Building or running the tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Rendering a chat template failed, or the model has none.
    #[error("chat template: {0}")]
    Template(String),
    /// Downloading from a model hub failed.
    #[error("hub: {0}")]
    Hub(String),
    /// A backend operation failed.
    #[error("backend: {0}")]
    Backend(String),
    /// A batch handed to the model is malformed.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
}

impl ModelError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// A format error in the file at `path`.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Self::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }
}
