//! Finding the CUDA libraries at run time.
//!
//! cudarc opens each library by name (`libnvrtc.so.13`, ...) through the
//! dynamic loader's search path, and panics if none loads. [`require`] checks
//! first. A toolkit library (NVRTC, cuBLAS, cuBLASLt) that is not on the
//! loader's path is also looked for in the directories of [`search_dirs`] and,
//! when found, opened by its full path and kept open: the loader then answers
//! cudarc's later open by name with it, since a loaded library is matched by
//! its soname. So `TESSERA_CUDA_LIB_DIR=.../nvidia/cu13/lib` (a pip wheel's
//! directory) works without `LD_LIBRARY_PATH`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{guarded, CudaError};

/// The CUDA major version of cudarc's bindings (its `cuda-13000` feature).
pub const CUDA_MAJOR: u32 = 13;

/// Environment variable: directories (`:`-separated) holding CUDA toolkit libraries.
pub const LIB_DIR_ENV: &str = "TESSERA_CUDA_LIB_DIR";

/// Libraries opened by path, kept open for the life of the process (cudarc
/// holds its own handles to them from the first call on).
static PRELOADED: Mutex<Vec<libloading::Library>> = Mutex::new(Vec::new());

/// A CUDA library tessera calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CudaLibrary {
    /// The driver API (`libcuda.so.1`), installed with the NVIDIA driver.
    Driver,
    /// The run-time compiler of `kernels/*.cu`.
    Nvrtc,
    /// cuBLAS.
    Cublas,
    /// cuBLASLt, which runs the GEMMs.
    CublasLt,
}

impl CudaLibrary {
    /// Every library, in the order they are checked.
    pub const ALL: [CudaLibrary; 4] = [Self::Driver, Self::Nvrtc, Self::Cublas, Self::CublasLt];

    /// The library in words, for errors.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Driver => "the CUDA driver library (libcuda.so.1)",
            Self::Nvrtc => "NVRTC, the CUDA run-time compiler (libnvrtc.so.13)",
            Self::Cublas => "cuBLAS (libcublas.so.13)",
            Self::CublasLt => "cuBLASLt (libcublasLt.so.13)",
        }
    }

    /// The file name stem cudarc asks the loader for (`lib{stem}.so...`).
    fn stem(self) -> &'static str {
        match self {
            Self::Driver => "cuda",
            Self::Nvrtc => "nvrtc",
            Self::Cublas => "cublas",
            Self::CublasLt => "cublasLt",
        }
    }

    /// The file this library is installed as.
    fn file_name(self) -> String {
        match self {
            Self::Driver => "libcuda.so.1".to_string(),
            _ => format!("lib{}.so.{CUDA_MAJOR}", self.stem()),
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Self::Driver => "install the NVIDIA driver (580 or newer for CUDA 13), or run with --device cpu",
            Self::Nvrtc => "install CUDA 13's NVRTC (the toolkit, or `pip install nvidia-cuda-nvrtc`) and put its lib directory on LD_LIBRARY_PATH or in TESSERA_CUDA_LIB_DIR",
            Self::Cublas | Self::CublasLt => "install CUDA 13's cuBLAS (the toolkit, or `pip install nvidia-cublas`) and put its lib directory on LD_LIBRARY_PATH or in TESSERA_CUDA_LIB_DIR",
        }
    }

    /// Whether cudarc can open this library by name. Never panics.
    pub fn is_loadable(self) -> bool {
        // SAFETY: each probe only tries to dlopen the candidate names; it
        // runs no code of the library beyond its initializers.
        let probe = || unsafe {
            match self {
                Self::Driver => cudarc::driver::sys::is_culib_present(),
                Self::Nvrtc => cudarc::nvrtc::sys::is_culib_present(),
                Self::Cublas => cudarc::cublas::sys::is_culib_present(),
                Self::CublasLt => cudarc::cublaslt::sys::is_culib_present(),
            }
        };
        guarded(self, probe).unwrap_or(false)
    }

    /// Calls one function of the library, so a missing symbol (an older
    /// library found first) is an error here rather than a panic later.
    fn first_call(self) -> Result<(), CudaError> {
        // SAFETY: version queries with valid out-pointers; the library is loadable.
        guarded(self, || unsafe {
            match self {
                Self::Driver => {
                    let mut version = 0;
                    cudarc::driver::sys::cuDriverGetVersion(&mut version);
                }
                Self::Nvrtc => {
                    let (mut major, mut minor) = (0, 0);
                    cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor);
                }
                Self::Cublas => {
                    cudarc::cublas::sys::cublasGetCudartVersion();
                }
                Self::CublasLt => {
                    cudarc::cublaslt::sys::cublasLtGetVersion();
                }
            }
        })
    }
}

/// Where toolkit libraries are looked for beyond the loader's path:
/// `$TESSERA_CUDA_LIB_DIR` (`:`-separated), `$CUDA_HOME/lib64`,
/// `$CUDA_PATH/lib64`, `/usr/local/cuda/lib64`.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os(LIB_DIR_ENV)
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(root) = std::env::var_os(var) {
            dirs.push(Path::new(&root).join("lib64"));
        }
    }
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    dirs.retain(|d| !d.as_os_str().is_empty());
    dirs
}

/// Makes `library` loadable and checks a first call into it: on the loader's
/// path, or else (toolkit libraries only; the driver comes with the driver)
/// from the first of `dirs` that holds it.
pub fn require(library: CudaLibrary, dirs: &[PathBuf]) -> Result<(), CudaError> {
    if !library.is_loadable() && library != CudaLibrary::Driver {
        if let Some(dir) = dirs.iter().find(|d| d.join(library.file_name()).is_file()) {
            if library == CudaLibrary::Nvrtc {
                // NVRTC opens its builtins by name when it first compiles.
                if let Some(builtins) = nvrtc_builtins(dir) {
                    preload(library, &builtins)?;
                }
            }
            preload(library, &dir.join(library.file_name()))?;
        }
    }
    if !library.is_loadable() {
        let dirs = if library == CudaLibrary::Driver || dirs.is_empty() {
            String::new()
        } else {
            let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            format!(", nor in {}", shown.join(", "))
        };
        return Err(CudaError::LibraryMissing {
            library: library.describe(),
            dirs,
            hint: library.hint(),
        });
    }
    library.first_call()
}

/// NVRTC's builtins library in `dir` (`libnvrtc-builtins.so.13.N`, not the
/// `.alt` variant).
fn nvrtc_builtins(dir: &Path) -> Option<PathBuf> {
    let prefix = format!("libnvrtc-builtins.so.{CUDA_MAJOR}.");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Opens `path` and keeps it open, so cudarc's open by name finds it.
fn preload(library: CudaLibrary, path: &Path) -> Result<(), CudaError> {
    // SAFETY: loading a CUDA library runs only its initializers.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| CudaError::LibraryBroken {
        library: library.describe(),
        message: format!("{}: {e}", path.display()),
    })?;
    PRELOADED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(lib);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_toolkit_library_names_itself_and_the_directories() {
        // cuBLAS is not on this test's path unless a toolkit is installed.
        if CudaLibrary::Cublas.is_loadable() {
            return;
        }
        let dir = PathBuf::from("/nonexistent/cuda/lib");
        let err = require(CudaLibrary::Cublas, std::slice::from_ref(&dir)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("libcublas.so.13"), "{msg}");
        assert!(msg.contains("/nonexistent/cuda/lib"), "{msg}");
        assert!(msg.contains("TESSERA_CUDA_LIB_DIR"), "{msg}");
    }

    #[test]
    fn search_dirs_end_with_the_default_toolkit() {
        assert_eq!(
            search_dirs().last(),
            Some(&PathBuf::from("/usr/local/cuda/lib64"))
        );
    }
}
