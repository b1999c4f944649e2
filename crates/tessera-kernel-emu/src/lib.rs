//! Runs the CUDA kernels of `kernels/` on the CPU, for tests: the same
//! sources NVRTC compiles, built as host C++ against `kernels/emu/cuda_emu.h`
//! (one OS thread per CUDA thread, `__syncthreads` as a barrier, warp
//! primitives checked against their masks, shared memory poisoned before
//! every block, blocks in a shuffled order).
//!
//! A test describes its buffers and launches as a [`Job`] (the launches come
//! from `tessera-kernel-launch`, as the CUDA backend's do) and runs it with
//! [`run`] on one of the [`Variant`]s of the driver program: plain, under
//! ThreadSanitizer, under AddressSanitizer + UBSan. The driver is a separate
//! program because ThreadSanitizer wants the whole process instrumented; the
//! job and its results travel through files.

mod driver;
mod job;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

pub use driver::Variant;
pub use job::{Arg, BufId, Job, Output};

/// What running a job can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EmuError {
    /// The C++ compiler is missing or failed on the driver.
    #[error("building the {variant:?} kernel driver: {message}")]
    Build {
        /// The driver that failed to build.
        variant: Variant,
        /// The compiler's command line and diagnostics.
        message: String,
    },
    /// The driver exited with an error: a sanitizer report, an emulator
    /// check (a bad warp mask, a deadlock), a crash.
    #[error("the {variant:?} kernel driver failed ({status}):\n{stderr}")]
    Run {
        /// The driver that ran.
        variant: Variant,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Reading or writing the job's files.
    #[error("{what}: {source}")]
    Io {
        /// The file operation.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The driver's output does not hold the job's buffers.
    #[error("malformed driver output: {0}")]
    Output(String),
}

/// Where the drivers and the jobs' files live: the build script's output
/// directory, inside the target directory.
fn work_dir() -> PathBuf {
    PathBuf::from(env!("OUT_DIR"))
}

/// Runs `job` on `variant`'s driver and returns every buffer as it was after
/// the last launch.
pub fn run(job: &Job, variant: Variant) -> Result<Output, EmuError> {
    run_with_env(job, variant, &[])
}

/// [`run`] with extra environment for the driver (`EMU_SEED`: the block
/// order; `EMU_WATCHDOG_S`: how long a barrier may wait).
pub fn run_with_env(job: &Job, variant: Variant, env: &[(&str, &str)]) -> Result<Output, EmuError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let exe = driver::get(variant)?;
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = work_dir().join("jobs");
    let io = |what: String| move |source| EmuError::Io { what, source };
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let stem = dir.join(format!("{}-{id}", std::process::id()));
    let (job_path, out_path) = (stem.with_extension("job"), stem.with_extension("out"));
    std::fs::write(&job_path, job.encode())
        .map_err(io(format!("writing {}", job_path.display())))?;
    let result = Command::new(&exe)
        .arg(&job_path)
        .arg(&out_path)
        .envs(variant.env())
        .envs(env.iter().copied())
        .output()
        .map_err(io(format!("running {}", exe.display())));
    let _ = std::fs::remove_file(&job_path);
    let result = result?;
    let stderr = String::from_utf8_lossy(&result.stderr).into_owned();
    if !result.status.success() || stderr.contains("WARNING: ThreadSanitizer") {
        let _ = std::fs::remove_file(&out_path);
        return Err(EmuError::Run {
            variant,
            status: result.status.to_string(),
            stderr,
        });
    }
    let bytes = std::fs::read(&out_path).map_err(io(format!("reading {}", out_path.display())))?;
    let _ = std::fs::remove_file(&out_path);
    Output::decode(&bytes, job)
}
