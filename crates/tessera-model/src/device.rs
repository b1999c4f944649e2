//! Which device the model runs on: `--device cpu | cuda[:N] | auto`.
//!
//! Compiled with or without the `cuda` feature, so the flag and its errors are
//! the same in every build: without the feature, asking for CUDA is an error
//! that says how to build it, and `auto` picks the CPU.

use std::fmt;
use std::str::FromStr;

/// The device asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The CPU backend.
    #[default]
    Cpu,
    /// CUDA device N (`cuda` is `cuda:0`).
    Cuda(usize),
    /// CUDA device 0 if the driver, the libraries and a device are there, else the CPU.
    Auto,
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Auto => f.write_str("auto"),
        }
    }
}

/// A `--device` value that is none of the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a device: use cpu, cuda, cuda:N (N a device number) or auto")]
pub struct ParseDeviceError(String);

impl FromStr for DeviceSpec {
    type Err = ParseDeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            "auto" => Ok(Self::Auto),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| ParseDeviceError(s.to_string())),
        }
    }
}

/// The device chosen.
#[derive(Debug)]
pub enum Device {
    /// The CPU backend.
    Cpu,
    /// An opened CUDA device.
    #[cfg(feature = "cuda")]
    Cuda(crate::cuda::CudaDevice),
}

/// What [`select`] chose, and why, for the start-up log.
#[derive(Debug)]
pub struct Selection {
    pub device: Device,
    /// E.g. "cpu (auto: no usable CUDA device: ...)".
    pub reason: String,
}

/// Why the device asked for cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// CUDA asked for, but this build has no CUDA support.
    #[error("--device {spec}: this tessera was built without CUDA support (the `cuda` feature); rebuild it with `cargo build --release --features cuda`, or use --device cpu")]
    NotCompiled { spec: DeviceSpec },
    /// CUDA asked for, and a library, the driver or the device is missing.
    #[cfg(feature = "cuda")]
    #[error("--device {spec}: {error}")]
    Cuda {
        spec: DeviceSpec,
        error: crate::cuda::CudaError,
    },
}

/// Resolves `spec` to a device: `cpu` always works; `cuda:N` opens device N
/// or says what is missing; `auto` tries `cuda:0` and falls back to the CPU,
/// with the reason in [`Selection::reason`].
pub fn select(spec: DeviceSpec) -> Result<Selection, DeviceError> {
    match spec {
        DeviceSpec::Cpu => Ok(Selection {
            device: Device::Cpu,
            reason: "cpu".to_string(),
        }),
        DeviceSpec::Cuda(ordinal) => open_cuda(spec, ordinal).map(|device| Selection {
            reason: describe(&device),
            device,
        }),
        DeviceSpec::Auto => Ok(match open_cuda(spec, 0) {
            Ok(device) => Selection {
                reason: format!("{} (auto)", describe(&device)),
                device,
            },
            Err(e) => Selection {
                device: Device::Cpu,
                reason: format!("cpu (auto: {})", auto_reason(&e)),
            },
        }),
    }
}

fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => d.to_string(),
    }
}

fn auto_reason(e: &DeviceError) -> String {
    match e {
        DeviceError::NotCompiled { .. } => "built without the cuda feature".to_string(),
        #[cfg(feature = "cuda")]
        DeviceError::Cuda { error, .. } => format!("no usable CUDA device: {error}"),
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(spec: DeviceSpec, ordinal: usize) -> Result<Device, DeviceError> {
    let dirs = crate::cuda::libs::search_dirs();
    crate::cuda::CudaDevice::open(ordinal, &dirs)
        .map(Device::Cuda)
        .map_err(|error| DeviceError::Cuda { spec, error })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(spec: DeviceSpec, _ordinal: usize) -> Result<Device, DeviceError> {
    Err(DeviceError::NotCompiled { spec })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("CUDA".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        assert_eq!(" auto ".parse(), Ok(DeviceSpec::Auto));
        for bad in ["", "cuda:", "cuda:-1", "cuda:x", "tpu", "cuda0"] {
            let err = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(err.to_string().contains("cuda:N"), "{bad}: {err}");
        }
        for spec in [DeviceSpec::Cpu, DeviceSpec::Cuda(2), DeviceSpec::Auto] {
            assert_eq!(spec.to_string().parse(), Ok(spec));
        }
    }

    #[test]
    fn cpu_is_always_available() {
        let s = select(DeviceSpec::Cpu).unwrap();
        assert!(matches!(s.device, Device::Cpu));
    }

    /// On a machine without a CUDA driver (CI), `cuda` is an error naming what
    /// is missing and `auto` falls back to the CPU; with the feature off, the
    /// error names the feature.
    #[test]
    fn without_cuda_auto_falls_back_and_cuda_explains() {
        #[cfg(feature = "cuda")]
        if crate::cuda::CudaLibrary::Driver.is_loadable() {
            return; // a GPU machine: the CUDA tests cover it
        }
        let auto = select(DeviceSpec::Auto).unwrap();
        assert!(matches!(auto.device, Device::Cpu));
        assert!(auto.reason.starts_with("cpu (auto: "), "{}", auto.reason);
        let msg = select(DeviceSpec::Cuda(1)).unwrap_err().to_string();
        assert!(msg.starts_with("--device cuda:1: "), "{msg}");
        #[cfg(feature = "cuda")]
        assert!(msg.contains("libcuda.so.1"), "{msg}");
        #[cfg(not(feature = "cuda"))]
        assert!(msg.contains("--features cuda"), "{msg}");
    }
}
