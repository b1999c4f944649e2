//! Opening a CUDA device: the libraries checked, the driver initialized, the
//! device's name, architecture and memory read.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use cudarc::driver::CudaContext;

use super::libs::{self, CudaLibrary};
use super::{guarded, CudaError};

/// A GPU architecture as NVRTC names it: compute capability `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Arch {
    pub major: u32,
    pub minor: u32,
}

impl Arch {
    /// Ampere (A100): the oldest architecture the kernels are written for
    /// (bf16 arithmetic, 64 KiB+ shared memory).
    pub const SM80: Arch = Arch { major: 8, minor: 0 };
    /// Hopper (H100, H200).
    pub const SM90: Arch = Arch { major: 9, minor: 0 };

    /// NVRTC's `--gpu-architecture` value for it, e.g. `compute_90`
    /// (PTX: the driver finishes the compilation when it loads the module).
    pub fn compute(self) -> String {
        format!("compute_{}{}", self.major, self.minor)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sm_{}{}", self.major, self.minor)
    }
}

/// An opened CUDA device and its context.
#[derive(Clone)]
pub struct CudaDevice {
    context: Arc<CudaContext>,
    ordinal: usize,
    name: String,
    arch: Arch,
    total_memory: usize,
}

impl fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CudaDevice")
            .field("ordinal", &self.ordinal)
            .field("name", &self.name)
            .field("arch", &self.arch)
            .field("total_memory", &self.total_memory)
            .finish()
    }
}

fn driver_error(call: &'static str, e: cudarc::driver::DriverError) -> CudaError {
    CudaError::Driver {
        call,
        message: e.to_string(),
    }
}

impl CudaDevice {
    /// Opens device `ordinal` after checking that every library tessera needs
    /// (driver, NVRTC, cuBLAS, cuBLASLt) loads; `lib_dirs` are the extra
    /// directories toolkit libraries are looked for in ([`libs::search_dirs`]).
    pub fn open(ordinal: usize, lib_dirs: &[PathBuf]) -> Result<Self, CudaError> {
        libs::require(CudaLibrary::Driver, lib_dirs)?;
        // A driver with no GPU answers cuInit with CUDA_ERROR_NO_DEVICE.
        let count = match guarded(CudaLibrary::Driver, CudaContext::device_count)? {
            Ok(n) => usize::try_from(n).unwrap_or(0),
            Err(e) if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_NO_DEVICE => 0,
            Err(e) => return Err(driver_error("cuInit / cuDeviceGetCount", e)),
        };
        if ordinal >= count {
            return Err(CudaError::NoDevice { ordinal, count });
        }
        for library in [
            CudaLibrary::Nvrtc,
            CudaLibrary::Cublas,
            CudaLibrary::CublasLt,
        ] {
            libs::require(library, lib_dirs)?;
        }
        let context = guarded(CudaLibrary::Driver, || CudaContext::new(ordinal))?
            .map_err(|e| driver_error("cuDevicePrimaryCtxRetain", e))?;
        let name = context
            .name()
            .map_err(|e| driver_error("cuDeviceGetName", e))?;
        let (major, minor) = context
            .compute_capability()
            .map_err(|e| driver_error("cuDeviceGetAttribute", e))?;
        let arch = Arch {
            major: u32::try_from(major).unwrap_or(0),
            minor: u32::try_from(minor).unwrap_or(0),
        };
        if arch.major < Arch::SM80.major {
            return Err(CudaError::UnsupportedArch {
                ordinal,
                name,
                arch,
            });
        }
        let total_memory = context
            .total_mem()
            .map_err(|e| driver_error("cuDeviceTotalMem", e))?;
        Ok(Self {
            context,
            ordinal,
            name,
            arch,
            total_memory,
        })
    }

    /// The device's context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.context
    }

    /// The device's ordinal (`cuda:N`).
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The device's name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its architecture.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Its memory in bytes.
    pub fn total_memory(&self) -> usize {
        self.total_memory
    }
}

impl fmt::Display for CudaDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cuda:{} ({}, {}, {:.1} GiB)",
            self.ordinal,
            self.name,
            self.arch,
            self.total_memory as f64 / f64::from(1u32 << 30)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names() {
        assert_eq!(Arch::SM90.to_string(), "sm_90");
        assert_eq!(Arch::SM80.compute(), "compute_80");
    }

    #[test]
    fn without_a_driver_opening_is_an_error_naming_it() {
        if CudaLibrary::Driver.is_loadable() {
            return; // a machine with a driver: the GPU tests cover it
        }
        let err = CudaDevice::open(0, &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("libcuda.so.1"), "{msg}");
        assert!(msg.contains("--device cpu"), "{msg}");
    }
}
