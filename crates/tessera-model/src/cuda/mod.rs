//! The CUDA device layer (`--features cuda`): finding the CUDA libraries,
//! opening a device, and compiling `kernels/*.cu` with NVRTC for it, with the
//! PTX cached on disk.
//!
//! cudarc is built with dynamic loading, so nothing here needs a CUDA toolkit
//! to build, and every library is looked for at run time. cudarc panics when a
//! library it calls is missing, so each library is probed first
//! ([`libs::require`]) and its first call runs under `catch_unwind`: a missing
//! or broken library is a [`CudaError`] that names it, never a panic.
//!
//! The model's operations on the device are the CUDA backend,
//! [`crate::backend::cuda::CudaBackend`], which stands on this layer: it
//! takes an opened [`CudaDevice`] and the [`LoadedKernels`], and adds
//! cuBLASLt GEMMs, device memory, the KV cache and the forward's operations.
//! Both compile with `--features cuda` on a machine without CUDA; neither has
//! run on a GPU yet (`scripts/gpu-check` prepares the tests that would).

pub mod device;
pub mod kernels;
pub mod libs;
pub mod nvrtc;
pub mod ptx_cache;

pub use device::{Arch, CudaDevice};
pub use kernels::{KernelSource, LoadedKernels, KERNEL_SOURCES};
pub use libs::CudaLibrary;

/// Something the CUDA layer could not do; each variant says what is missing or
/// broken in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// A CUDA library could not be found by its name or in the library directories.
    #[error("{library} not found on the loader's path{dirs}; {hint}")]
    LibraryMissing {
        /// The library, in words, with its file name.
        library: &'static str,
        /// ", nor in DIR, DIR" when directories were searched too.
        dirs: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// A library was found but a first call into it failed (a missing symbol:
    /// usually an older version than CUDA 13.0).
    #[error("{library} is present but unusable: {message}")]
    LibraryBroken {
        library: &'static str,
        message: String,
    },
    /// A CUDA driver call failed.
    #[error("CUDA driver: {call}: {message}")]
    Driver { call: &'static str, message: String },
    /// The driver found no device with this ordinal.
    #[error("no CUDA device {ordinal}: the driver sees {count} device(s)")]
    NoDevice { ordinal: usize, count: usize },
    /// The device is older than the kernels support.
    #[error(
        "CUDA device {ordinal} ({name}) is {arch}; tessera's kernels need sm_80 (Ampere) or newer"
    )]
    UnsupportedArch {
        ordinal: usize,
        name: String,
        arch: Arch,
    },
    /// NVRTC rejected a kernel source; `log` is its output.
    #[error("NVRTC could not compile {kernel} for {arch}:\n{log}")]
    Compile {
        kernel: &'static str,
        arch: Arch,
        log: String,
    },
    /// NVRTC compiled a kernel but warned (an error where warnings are not allowed).
    #[error("NVRTC warned compiling {kernel} for {arch}:\n{log}")]
    CompileWarnings {
        kernel: &'static str,
        arch: Arch,
        log: String,
    },
    /// An NVRTC call other than the compilation failed.
    #[error("NVRTC: {call}: {message}")]
    Nvrtc { call: &'static str, message: String },
    /// The driver would not load a compiled kernel module.
    #[error("loading the {kernel} kernels on cuda:{ordinal}: {message}")]
    ModuleLoad {
        kernel: &'static str,
        ordinal: usize,
        message: String,
    },
    /// A kernel source includes a file that is not one of the embedded sources.
    #[error("{kernel}: #include \"{name}\" is not an embedded kernel header")]
    UnknownInclude { kernel: &'static str, name: String },
}

/// Runs a first call into a CUDA library, turning a cudarc panic (a missing
/// symbol) into [`CudaError::LibraryBroken`].
pub(crate) fn guarded<T>(library: CudaLibrary, call: impl FnOnce() -> T) -> Result<T, CudaError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "it panicked".to_string());
        CudaError::LibraryBroken {
            library: library.describe(),
            message,
        }
    })
}
