//! Compiling a kernel source with NVRTC, keeping the compiler's log: a
//! compilation that succeeds can still warn, and the CI test treats a warning
//! as a failure ([`compile`] with `strict`).

use std::ffi::{c_char, CString};

use cudarc::nvrtc::{result, sys};

use super::device::Arch;
use super::kernels::KernelSource;
use super::libs::CudaLibrary;
use super::{guarded, CudaError};

/// What NVRTC produced for one source.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The PTX text.
    pub ptx: String,
    /// The compiler's log (warnings); empty when it had nothing to say.
    pub log: String,
}

/// NVRTC's version, `(major, minor)`. NVRTC must be loadable
/// ([`super::libs::require`]).
pub fn version() -> Result<(i32, i32), CudaError> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: valid out-pointers.
    guarded(CudaLibrary::Nvrtc, || unsafe {
        sys::nvrtcVersion(&mut major, &mut minor)
    })?
    .result()
    .map_err(|e| nvrtc_error("nvrtcVersion", e))?;
    Ok((major, minor))
}

/// The options every kernel is compiled with, for `arch`: PTX for its
/// virtual architecture, which the driver turns into machine code at load.
pub fn options(arch: Arch) -> Vec<String> {
    vec![
        format!("--gpu-architecture={}", arch.compute()),
        "--std=c++17".to_string(),
    ]
}

fn nvrtc_error(call: &'static str, e: result::NvrtcError) -> CudaError {
    CudaError::Nvrtc {
        call,
        message: format!("{:?}", e.0),
    }
}

fn text(bytes: &[c_char]) -> String {
    let bytes: Vec<u8> = bytes
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).trim_end().to_string()
}

/// Compiles `kernel` for `arch`. With `strict`, a non-empty log (a warning)
/// is an error too.
pub fn compile(kernel: &KernelSource, arch: Arch, strict: bool) -> Result<Compiled, CudaError> {
    let source = kernel.resolved()?;
    let source = CString::new(source).map_err(|_| CudaError::Compile {
        kernel: kernel.file,
        arch,
        log: "the source holds a NUL byte".to_string(),
    })?;
    let name = CString::new(kernel.file).map_err(|_| CudaError::Compile {
        kernel: kernel.file,
        arch,
        log: "the file name holds a NUL byte".to_string(),
    })?;
    guarded(CudaLibrary::Nvrtc, || {
        compile_loaded(kernel, &source, &name, arch)
    })?
    .and_then(|compiled| {
        if strict && !compiled.log.is_empty() {
            return Err(CudaError::CompileWarnings {
                kernel: kernel.file,
                arch,
                log: compiled.log,
            });
        }
        Ok(compiled)
    })
}

fn compile_loaded(
    kernel: &KernelSource,
    source: &CString,
    name: &CString,
    arch: Arch,
) -> Result<Compiled, CudaError> {
    let prog = result::create_program(source, Some(name))
        .map_err(|e| nvrtc_error("nvrtcCreateProgram", e))?;
    // SAFETY: `prog` was just created and is destroyed once, below.
    let outcome = unsafe {
        let compiled = result::compile_program(prog, &options(arch));
        let log = result::get_program_log(prog)
            .map(|l| text(&l))
            .map_err(|e| nvrtc_error("nvrtcGetProgramLog", e));
        let ptx = match (&compiled, &log) {
            (Ok(()), Ok(_)) => Some(
                result::get_ptx(prog)
                    .map(|p| text(&p))
                    .map_err(|e| nvrtc_error("nvrtcGetPTX", e)),
            ),
            _ => None,
        };
        // A failure to free the program is not worth failing the start-up.
        let _ = result::destroy_program(prog);
        (compiled, log, ptx)
    };
    match outcome {
        (_, Err(e), _) => Err(e),
        (Err(_), Ok(log), _) => Err(CudaError::Compile {
            kernel: kernel.file,
            arch,
            log,
        }),
        (Ok(()), Ok(log), Some(ptx)) => Ok(Compiled { ptx: ptx?, log }),
        (Ok(()), Ok(_), None) => Err(CudaError::Nvrtc {
            call: "nvrtcGetPTX",
            message: "no PTX".to_string(),
        }),
    }
}
