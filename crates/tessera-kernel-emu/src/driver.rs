//! Builds `kernels/emu/driver.cpp` into the programs the tests run: one per
//! [`Variant`], cached under the target directory by a hash of the sources
//! and flags, so a second `cargo test` starts at once.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::{work_dir, EmuError};

/// A build of the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Optimized, no sanitizer: results and timings.
    Plain,
    /// ThreadSanitizer: races in shared and global memory inside a block,
    /// missing barriers.
    Tsan,
    /// AddressSanitizer and UBSan (bounds, alignment, overflow): reads and
    /// writes past a buffer allocated to its exact size.
    Asan,
    /// ThreadSanitizer on a copy of `attention.cu` with the barrier between
    /// loading a K/V tile and reading it removed: proves the harness bites.
    TsanAttentionWithoutBarrier,
}

/// Every compile shares these: CUDA's own rules where C++'s differ (the
/// kernels type-pun through pointers, as CUDA allows) and no noise for the
/// device-only pragmas.
const COMMON_FLAGS: &[&str] = &[
    "-std=c++20",
    "-pthread",
    "-fno-strict-aliasing",
    "-Wall",
    "-Wno-sign-compare",
    "-Wno-unknown-pragmas",
];

/// The line `attention.cu` must hold exactly once, and what the mutant has
/// in its place.
const BARRIER_AFTER_LOAD: &str =
    "        __syncthreads();\n        // Scores of every (head, key) pair of the tile.";
const BARRIER_REMOVED: &str =
    "        // (barrier removed)\n        // Scores of every (head, key) pair of the tile.";

const ALL: [Variant; 4] = [
    Variant::Plain,
    Variant::Tsan,
    Variant::Asan,
    Variant::TsanAttentionWithoutBarrier,
];

impl Variant {
    fn flags(self) -> &'static [&'static str] {
        match self {
            Variant::Plain => &["-O2"],
            Variant::Tsan | Variant::TsanAttentionWithoutBarrier => {
                &["-O1", "-g", "-fsanitize=thread"]
            }
            Variant::Asan => &[
                "-O1",
                "-g",
                "-fno-omit-frame-pointer",
                "-fsanitize=address,undefined",
                "-fno-sanitize-recover=all",
            ],
        }
    }

    /// Sanitizer options: stop at the first report with a failing status.
    pub(crate) fn env(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Variant::Plain => vec![],
            Variant::Tsan | Variant::TsanAttentionWithoutBarrier => {
                vec![("TSAN_OPTIONS", "halt_on_error=1 exitcode=66")]
            }
            // Leak checking needs ptrace, which containers often refuse; the
            // driver frees its buffers anyway.
            Variant::Asan => vec![
                ("ASAN_OPTIONS", "detect_leaks=0 abort_on_error=0"),
                ("UBSAN_OPTIONS", "print_stacktrace=1 halt_on_error=1"),
            ],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Tsan => "tsan",
            Variant::Asan => "asan",
            Variant::TsanAttentionWithoutBarrier => "tsan-attention-without-barrier",
        }
    }
}

/// `kernels/` of the repository.
pub(crate) fn kernels_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels")
}

/// The driver program of `variant`, built on first use.
pub(crate) fn get(variant: Variant) -> Result<PathBuf, EmuError> {
    type Built = Result<PathBuf, String>;
    static STANDARD: OnceLock<[Built; 3]> = OnceLock::new();
    static MUTANT: OnceLock<Built> = OnceLock::new();
    let built = match variant {
        Variant::TsanAttentionWithoutBarrier => MUTANT.get_or_init(|| build(variant)),
        _ => {
            // The three are built side by side on first use: most tests run
            // all of them.
            let all = STANDARD.get_or_init(|| {
                std::thread::scope(|s| {
                    let [p, t, a] = [Variant::Plain, Variant::Tsan, Variant::Asan]
                        .map(|v| s.spawn(move || build(v)));
                    [p, t, a].map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err("build thread panicked".into()))
                    })
                })
            });
            match variant {
                Variant::Plain => &all[0],
                Variant::Tsan => &all[1],
                _ => &all[2],
            }
        }
    };
    built
        .clone()
        .map_err(|message| EmuError::Build { variant, message })
}

/// The C++ compiler, as the `cc` crate finds it (honours `CXX`).
fn compiler() -> Result<PathBuf, String> {
    let target = env!("TESSERA_EMU_TARGET");
    cc::Build::new()
        .cpp(true)
        .target(target)
        .host(target)
        .opt_level(2)
        .cargo_metadata(false)
        .try_get_compiler()
        .map(|tool| tool.path().to_path_buf())
        .map_err(|e| format!("no C++ compiler: {e}"))
}

/// Every file the driver includes, sorted, with its text.
fn sources() -> Result<Vec<(PathBuf, String)>, String> {
    let mut files = Vec::new();
    for dir in [kernels_dir(), kernels_dir().join("emu")] {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for e in entries {
            let path = e.map_err(|e| format!("{}: {e}", dir.display()))?.path();
            let ext = path.extension().and_then(|x| x.to_str()).unwrap_or("");
            if matches!(ext, "cu" | "cuh" | "h" | "cpp") {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                files.push((path, text));
            }
        }
    }
    files.sort();
    Ok(files)
}

fn build(variant: Variant) -> Result<PathBuf, String> {
    let cxx = compiler()?;
    let mut hasher = DefaultHasher::new();
    // One directory per version of the sources, every variant in it.
    let flags = ALL.map(Variant::flags);
    (sources()?, &cxx, COMMON_FLAGS, flags).hash(&mut hasher);
    let dir = work_dir().join(format!("driver-{:016x}", hasher.finish()));
    let exe = dir.join(variant.name());
    if exe.is_file() {
        return Ok(exe);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    remove_stale(&dir);
    let kernels = kernels_dir();
    let mut cmd = Command::new(&cxx);
    cmd.args(COMMON_FLAGS).args(variant.flags());
    cmd.arg("-I")
        .arg(&kernels)
        .arg("-I")
        .arg(kernels.join("emu"));
    if variant == Variant::TsanAttentionWithoutBarrier {
        let mutant = dir.join("attention_without_barrier.cu");
        let text =
            std::fs::read_to_string(kernels.join("attention.cu")).map_err(|e| e.to_string())?;
        if text.matches(BARRIER_AFTER_LOAD).count() != 1 {
            return Err("attention.cu no longer has the one barrier after the tile load".into());
        }
        std::fs::write(&mutant, text.replace(BARRIER_AFTER_LOAD, BARRIER_REMOVED))
            .map_err(|e| format!("{}: {e}", mutant.display()))?;
        cmd.arg(format!("-DEMU_ATTENTION_FILE=\"{}\"", mutant.display()));
    }
    // Built under a temporary name: a half-written program is never cached.
    let tmp = dir.join(format!("{}.tmp{}", variant.name(), std::process::id()));
    cmd.arg(kernels.join("emu/driver.cpp")).arg("-o").arg(&tmp);
    let out = cmd
        .output()
        .map_err(|e| format!("{}: {e}", cxx.display()))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    std::fs::rename(&tmp, &exe).map_err(|e| format!("{}: {e}", exe.display()))?;
    Ok(exe)
}

/// Removes the drivers built from older sources (a few MiB each, one set per
/// kernel edit). Best effort: a directory that will not go is left.
fn remove_stale(current: &Path) {
    let Ok(entries) = std::fs::read_dir(work_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let stale = path != current
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("driver-"));
        if stale {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}
