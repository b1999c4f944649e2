//! Every kernel in `kernels/` compiles with NVRTC for sm_80 and sm_90 without
//! an error or a warning. Needs no GPU, only NVRTC: `scripts/test` installs
//! CUDA 13.0's from PyPI into `.venv` (scripts/python-env), where this test
//! finds it; `TESSERA_CUDA_LIB_DIR` or the loader's path can name another.
#![cfg(feature = "cuda")]

use std::path::{Path, PathBuf};

use tessera_model::cuda::libs::{self, CudaLibrary};
use tessera_model::cuda::ptx_cache::{self, PtxCache};
use tessera_model::cuda::{nvrtc, Arch, KERNEL_SOURCES};

/// `.venv/lib/python*/site-packages/nvidia/cu13/lib` under the repository.
fn venv_nvrtc_dir() -> Option<PathBuf> {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/lib");
    std::fs::read_dir(lib)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/nvidia/cu13/lib"))
        .find(|d| d.join("libnvrtc.so.13").is_file())
}

fn load_nvrtc() {
    let mut dirs = libs::search_dirs();
    dirs.extend(venv_nvrtc_dir());
    if let Err(e) = libs::require(CudaLibrary::Nvrtc, &dirs) {
        panic!("{e}\n(run scripts/python-env, which installs nvidia-cuda-nvrtc into .venv)");
    }
}

#[test]
fn every_kernel_compiles_cleanly_for_sm80_and_sm90() {
    load_nvrtc();
    let (major, minor) = nvrtc::version().unwrap();
    assert_eq!(
        major, 13,
        "NVRTC {major}.{minor}: the bindings are CUDA 13's"
    );
    let mut failures = Vec::new();
    for kernel in KERNEL_SOURCES {
        for arch in [Arch::SM80, Arch::SM90] {
            match nvrtc::compile(kernel, arch, true) {
                Ok(compiled) => {
                    for f in kernel.functions {
                        if !compiled.ptx.contains(&format!(".entry {f}(")) {
                            failures.push(format!("{} ({arch}): no kernel {f}", kernel.file));
                        }
                    }
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn compiled_ptx_is_cached_on_disk() {
    load_nvrtc();
    let dir = std::env::temp_dir().join(format!("tessera-ptx-{}", std::process::id()));
    let cache = PtxCache::new(&dir);
    let kernel = KERNEL_SOURCES
        .iter()
        .find(|k| k.file == "activation.cu")
        .unwrap();
    let first = ptx_cache::get_or_compile(Some(&cache), kernel, Arch::SM90).unwrap();
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(files.len(), 1);
    // A second start reads the file: poison it (still plausible PTX) to see.
    let path = files[0].as_ref().unwrap().path();
    let marked = format!("{first}// from the cache\n");
    std::fs::write(&path, &marked).unwrap();
    let second = ptx_cache::get_or_compile(Some(&cache), kernel, Arch::SM90).unwrap();
    assert_eq!(second, marked);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_kernel_error_is_reported_with_the_compiler_log() {
    load_nvrtc();
    let bad = tessera_model::cuda::KernelSource {
        file: "bad.cu",
        text: "extern \"C\" __global__ void k(float* o) { o[0] = undefined_name; }\n",
        functions: &["k"],
    };
    let msg = nvrtc::compile(&bad, Arch::SM90, true)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("bad.cu") && msg.contains("undefined_name"),
        "{msg}"
    );
    let warns = tessera_model::cuda::KernelSource {
        file: "warns.cu",
        text: "extern \"C\" __global__ void k(float* o) { int unused = 1; o[0] = 1.0f; }\n",
        functions: &["k"],
    };
    assert!(nvrtc::compile(&warns, Arch::SM90, false).is_ok());
    let msg = nvrtc::compile(&warns, Arch::SM90, true)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("warned") && msg.contains("unused"), "{msg}");
}
