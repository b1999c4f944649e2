//! A CUDA library that is missing or broken is an error naming it, never a
//! panic: cudarc panics on a missing symbol, and the probe catches it. Its own
//! test binary, since what the dynamic loader has opened is process-wide.
#![cfg(feature = "cuda")]

use std::path::Path;
use std::process::Command;

use tessera_model::cuda::libs::{self, CudaLibrary};
use tessera_model::cuda::CudaError;

/// Builds an empty shared library named like cuBLASLt (soname
/// `libcublasLt.so.13`) in `dir`: it loads, but has none of the symbols.
fn fake_cublaslt(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let src = dir.join("empty.c");
    std::fs::write(&src, "int tessera_not_cublas(void) { return 0; }\n").unwrap();
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-Wl,-soname,libcublasLt.so.13", "-o"])
        .arg(dir.join("libcublasLt.so.13"))
        .arg(&src)
        .status()
        .expect("cc (the linker Rust uses) runs");
    assert!(status.success());
}

#[test]
fn a_library_without_its_symbols_is_an_error_not_a_panic() {
    if CudaLibrary::CublasLt.is_loadable() {
        return; // a real cuBLASLt is on the loader's path: nothing to fake
    }
    let dir = std::env::temp_dir().join(format!("tessera-fake-cuda-{}", std::process::id()));
    fake_cublaslt(&dir);
    let err = libs::require(CudaLibrary::CublasLt, std::slice::from_ref(&dir)).unwrap_err();
    assert!(matches!(err, CudaError::LibraryBroken { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("libcublasLt.so.13") && msg.contains("cublasLtGetVersion"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_library_names_where_it_was_looked_for() {
    if CudaLibrary::Cublas.is_loadable() {
        return;
    }
    let dir = Path::new("/nonexistent/tessera/cuda/lib").to_path_buf();
    let msg = libs::require(CudaLibrary::Cublas, &[dir])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("cuBLAS (libcublas.so.13) not found")
            && msg.contains("/nonexistent/tessera/cuda/lib"),
        "{msg}"
    );
}
