//! The CUDA sources of `kernels/`, embedded in the binary, and their modules
//! loaded on a device.
//!
//! Sources are compiled at start-up for the device's architecture (through
//! the on-disk PTX cache), so the binary carries no machine code and runs on
//! any architecture from sm_80 on. `#include "common.cuh"` is resolved here,
//! textually, from the embedded headers: NVRTC then needs no include path.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;

use super::device::CudaDevice;
use super::ptx_cache::{self, PtxCache};
use super::CudaError;

/// One `kernels/*.cu` file: an NVRTC program, a module on the device.
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    /// The file name, e.g. "attention.cu".
    pub file: &'static str,
    /// Its text, includes unresolved.
    pub text: &'static str,
    /// The `extern "C"` kernels it defines; loading checks each is there.
    pub functions: &'static [&'static str],
}

/// Headers the sources may include, by name.
const HEADERS: &[(&str, &str)] = &[("common.cuh", include_str!("../../../../kernels/common.cuh"))];

/// Every kernel source, in the order they are compiled.
pub const KERNEL_SOURCES: &[KernelSource] = &[
    KernelSource {
        file: "embedding.cu",
        text: include_str!("../../../../kernels/embedding.cu"),
        functions: &["embedding_gather_bf16", "gather_rows_bf16"],
    },
    KernelSource {
        file: "norm.cu",
        text: include_str!("../../../../kernels/norm.cu"),
        functions: &[
            "rms_norm_f32_bf16",
            "add_rms_norm_f32_bf16",
            "add_normed_rms_norm_f32_bf16",
            "head_rms_norm_bf16",
        ],
    },
    KernelSource {
        file: "rotary.cu",
        text: include_str!("../../../../kernels/rotary.cu"),
        functions: &["rotary_cache_write_bf16"],
    },
    KernelSource {
        file: "activation.cu",
        text: include_str!("../../../../kernels/activation.cu"),
        functions: &[
            "silu_mul_bf16",
            "gelu_tanh_mul_bf16",
            "scale_f32",
            "softcap_f32",
        ],
    },
    KernelSource {
        file: "attention.cu",
        text: include_str!("../../../../kernels/attention.cu"),
        functions: &[
            "paged_attention_d64",
            "paged_attention_d80",
            "paged_attention_d96",
            "paged_attention_d128",
            "paged_attention_combine",
        ],
    },
];

impl KernelSource {
    /// The source NVRTC compiles: each `#include "name"` line replaced by the
    /// embedded header of that name.
    pub fn resolved(&self) -> Result<String, CudaError> {
        let mut out = String::with_capacity(self.text.len() + 4096);
        for line in self.text.lines() {
            match included_name(line) {
                Some(name) => {
                    let header = HEADERS.iter().find(|(n, _)| *n == name).ok_or_else(|| {
                        CudaError::UnknownInclude {
                            kernel: self.file,
                            name: name.to_string(),
                        }
                    })?;
                    out.push_str(header.1);
                }
                None => out.push_str(line),
            }
            out.push('\n');
        }
        Ok(out)
    }
}

/// `name` of a `#include "name"` line.
fn included_name(line: &str) -> Option<&str> {
    let rest = line.trim().strip_prefix("#include")?.trim();
    rest.strip_prefix('"')?.strip_suffix('"')
}

/// Every kernel of [`KERNEL_SOURCES`], loaded on one device.
pub struct LoadedKernels {
    _modules: Vec<Arc<CudaModule>>,
    functions: HashMap<&'static str, CudaFunction>,
}

impl LoadedKernels {
    /// Compiles (or takes from `cache`) every source for `device`'s
    /// architecture and loads it; fails naming the kernel that did not.
    pub fn load(device: &CudaDevice, cache: Option<&PtxCache>) -> Result<Self, CudaError> {
        let mut modules = Vec::with_capacity(KERNEL_SOURCES.len());
        let mut functions = HashMap::new();
        for kernel in KERNEL_SOURCES {
            let ptx = ptx_cache::get_or_compile(cache, kernel, device.arch())?;
            let load_error = |message: String| CudaError::ModuleLoad {
                kernel: kernel.file,
                ordinal: device.ordinal(),
                message,
            };
            let module = device
                .context()
                .load_module(Ptx::from_src(ptx))
                .map_err(|e| load_error(module_hint(e)))?;
            for &name in kernel.functions {
                let f = module
                    .load_function(name)
                    .map_err(|e| load_error(format!("kernel {name}: {e}")))?;
                functions.insert(name, f);
            }
            modules.push(module);
        }
        Ok(Self {
            _modules: modules,
            functions,
        })
    }

    /// The kernel named `name`.
    pub fn function(&self, name: &str) -> Option<&CudaFunction> {
        self.functions.get(name)
    }

    /// How many kernels are loaded.
    pub fn len(&self) -> usize {
        self.functions.len()
    }

    /// Whether none are (never, after a successful load).
    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }
}

/// A module-load error, with the likely cause when the PTX is too new.
fn module_hint(e: cudarc::driver::DriverError) -> String {
    if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION {
        format!("{e}: the NVRTC found is newer than the driver supports; use CUDA 13.0's NVRTC or update the driver")
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_resolves_and_defines_its_kernels() {
        for k in KERNEL_SOURCES {
            let src = k.resolved().unwrap();
            assert!(!src.contains("#include"), "{}", k.file);
            assert!(src.contains("TESSERA_COMMON_CUH"), "{}", k.file);
            for f in k.functions {
                // Defined directly or through the attention macro.
                let direct = format!(" {f}(");
                let by_macro = f
                    .strip_prefix("paged_attention_d")
                    .filter(|d| d.parse::<u32>().is_ok())
                    .map(|d| format!("TESSERA_ATTENTION({d})"));
                assert!(
                    src.contains(&direct) || by_macro.is_some_and(|m| src.contains(&m)),
                    "{}: {f}",
                    k.file
                );
            }
        }
    }

    #[test]
    fn an_unknown_include_is_an_error() {
        let k = KernelSource {
            file: "x.cu",
            text: "#include \"missing.cuh\"\n",
            functions: &[],
        };
        let msg = k.resolved().unwrap_err().to_string();
        assert!(msg.contains("missing.cuh"), "{msg}");
    }
}
