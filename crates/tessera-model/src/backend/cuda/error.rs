//! What an operation of the CUDA backend can fail with. Every variant becomes a
//! [`ModelError`] (a malformed batch stays [`ModelError::InvalidBatch`], the
//! rest are [`ModelError::Backend`]), so the model code above never sees CUDA types.

use cudarc::cublaslt::result::CublasError;
use cudarc::driver::DriverError;

use crate::cuda::CudaError;
use crate::error::ModelError;

/// A failed operation of [`super::CudaBackend`].
#[derive(Debug, thiserror::Error)]
pub enum CudaBackendError {
    /// Opening the device, loading a library or a kernel failed.
    #[error(transparent)]
    Device(#[from] CudaError),
    /// A CUDA driver call failed (an allocation, a copy, a launch, a
    /// synchronization that reports an earlier kernel's fault).
    #[error("CUDA driver: {op}: {source}")]
    Driver {
        op: &'static str,
        #[source]
        source: DriverError,
    },
    /// A cuBLASLt call failed.
    #[error("cuBLASLt: {op}: {source}")]
    Cublas {
        op: &'static str,
        #[source]
        source: CublasError,
    },
    /// A size does not fit the 32-bit integers the kernels take.
    #[error("{what} = {value} is too large for the CUDA kernels (32-bit sizes)")]
    TooLarge { what: &'static str, value: usize },
    /// Operands whose shapes or types do not fit the operation.
    #[error("{0}")]
    Shape(String),
    /// A model or option the CUDA backend does not implement (a head size
    /// without an attention kernel, an f32 KV cache).
    #[error("{0}")]
    Unsupported(String),
    /// A batch that refers outside the KV pool or the rotary table.
    #[error("{0}")]
    InvalidBatch(String),
    /// A weight matrix whose bytes do not hold its stated shape.
    #[error("{name}: {message}")]
    Weights { name: String, message: String },
}

impl From<CudaBackendError> for ModelError {
    fn from(e: CudaBackendError) -> Self {
        match e {
            CudaBackendError::InvalidBatch(msg) => ModelError::InvalidBatch(msg),
            other => ModelError::Backend(other.to_string()),
        }
    }
}

/// `map_err` helper: a driver error during `op`.
pub(crate) fn driver(op: &'static str) -> impl FnOnce(DriverError) -> CudaBackendError {
    move |source| CudaBackendError::Driver { op, source }
}

/// `map_err` helper: a cuBLASLt error during `op`.
pub(crate) fn cublas(op: &'static str) -> impl FnOnce(CublasError) -> CudaBackendError {
    move |source| CudaBackendError::Cublas { op, source }
}

/// `value` as a kernel's `int` argument.
pub(crate) fn int(what: &'static str, value: usize) -> Result<i32, CudaBackendError> {
    i32::try_from(value).map_err(|_| CudaBackendError::TooLarge { what, value })
}

impl From<tessera_kernel_launch::TooLarge> for CudaBackendError {
    fn from(e: tessera_kernel_launch::TooLarge) -> Self {
        CudaBackendError::TooLarge {
            what: e.what,
            value: e.value,
        }
    }
}

/// The driver's form of a shared launch configuration.
pub(crate) fn config(l: tessera_kernel_launch::Launch) -> cudarc::driver::LaunchConfig {
    cudarc::driver::LaunchConfig {
        grid_dim: l.grid,
        block_dim: l.block,
        shared_mem_bytes: l.shared_mem_bytes,
    }
}
