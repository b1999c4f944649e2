//! PTX on disk, keyed by what determines it: the resolved source, the
//! architecture, the NVRTC options and NVRTC's version. A start-up after the
//! first skips NVRTC entirely.
//!
//! The cache is an optimization, never a failure: an entry that cannot be
//! read or written is compiled again, with a warning.

use std::path::{Path, PathBuf};

use super::device::Arch;
use super::kernels::KernelSource;
use super::{nvrtc, CudaError};

/// Environment variable overriding the cache directory.
pub const CACHE_DIR_ENV: &str = "TESSERA_PTX_CACHE";

/// A directory of cached PTX files.
#[derive(Debug, Clone)]
pub struct PtxCache {
    dir: PathBuf,
}

impl PtxCache {
    /// A cache in `dir` (created on the first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$TESSERA_PTX_CACHE`, else `$XDG_CACHE_HOME/tessera/ptx`, else
    /// `~/.cache/tessera/ptx`; `None` when none of them is set.
    pub fn default_dir() -> Option<PathBuf> {
        let env = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(dir) = env(CACHE_DIR_ENV) {
            return Some(PathBuf::from(dir));
        }
        let base = env("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| Path::new(&h).join(".cache")))?;
        Some(base.join("tessera").join("ptx"))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file an entry lives in: `attention-sm_90-<sha256 prefix>.ptx`.
    pub fn path(&self, kernel: &KernelSource, arch: Arch, key: &str) -> PathBuf {
        let stem = kernel.file.trim_end_matches(".cu");
        self.dir.join(format!("{stem}-{arch}-{key}.ptx"))
    }

    /// The cached PTX, if there and plausible (PTX text starts with a comment
    /// header and holds a `.version` line).
    pub fn get(&self, kernel: &KernelSource, arch: Arch, key: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.path(kernel, arch, key)).ok()?;
        (text.starts_with("//") && text.contains(".version")).then_some(text)
    }

    /// Stores `ptx`: written to a temporary file, then renamed, so a reader
    /// never sees half a file.
    pub fn put(
        &self,
        kernel: &KernelSource,
        arch: Arch,
        key: &str,
        ptx: &str,
    ) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(kernel, arch, key);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, ptx)?;
        std::fs::rename(&tmp, &path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

/// The cache key: SHA-256 (first 16 bytes, hex) of the resolved source, the
/// architecture, the options and the NVRTC version.
pub fn key(source: &str, arch: Arch, options: &[String], nvrtc_version: (i32, i32)) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(source.as_bytes());
    ctx.update(format!("\n{arch}\n{options:?}\n{nvrtc_version:?}").as_bytes());
    ctx.finish().as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The PTX of `kernel` for `arch`: from `cache` when it has it, else compiled
/// (and stored). NVRTC must be loadable.
pub fn get_or_compile(
    cache: Option<&PtxCache>,
    kernel: &KernelSource,
    arch: Arch,
) -> Result<String, CudaError> {
    let Some(cache) = cache else {
        return Ok(nvrtc::compile(kernel, arch, false)?.ptx);
    };
    let key = key(
        &kernel.resolved()?,
        arch,
        &nvrtc::options(arch),
        nvrtc::version()?,
    );
    if let Some(ptx) = cache.get(kernel, arch, &key) {
        return Ok(ptx);
    }
    let compiled = nvrtc::compile(kernel, arch, false)?;
    if !compiled.log.is_empty() {
        tracing::warn!(kernel = kernel.file, %arch, "NVRTC: {}", compiled.log);
    }
    if let Err(e) = cache.put(kernel, arch, &key, &compiled.ptx) {
        tracing::warn!(
            "PTX cache {}: {e}; compiling again next start",
            cache.dir().display()
        );
    }
    Ok(compiled.ptx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::KERNEL_SOURCES;

    #[test]
    fn keys_change_with_every_input() {
        let opts = vec!["--a".to_string()];
        let base = key("src", Arch::SM90, &opts, (13, 0));
        assert_eq!(base.len(), 32);
        assert_eq!(base, key("src", Arch::SM90, &opts, (13, 0)));
        assert_ne!(base, key("src2", Arch::SM90, &opts, (13, 0)));
        assert_ne!(base, key("src", Arch::SM80, &opts, (13, 0)));
        assert_ne!(base, key("src", Arch::SM90, &[], (13, 0)));
        assert_ne!(base, key("src", Arch::SM90, &opts, (13, 1)));
    }

    #[test]
    fn entries_round_trip_and_bad_ones_are_misses() {
        let dir = std::env::temp_dir().join(format!("tessera-ptx-test-{}", std::process::id()));
        let cache = PtxCache::new(dir.join("nested"));
        let kernel = &KERNEL_SOURCES[0];
        let ptx = "//\n// Generated by NVIDIA NVVM Compiler\n.version 9.0\n";
        assert_eq!(cache.get(kernel, Arch::SM90, "k"), None);
        cache.put(kernel, Arch::SM90, "k", ptx).unwrap();
        assert_eq!(cache.get(kernel, Arch::SM90, "k").as_deref(), Some(ptx));
        assert_eq!(cache.get(kernel, Arch::SM80, "k"), None);
        std::fs::write(cache.path(kernel, Arch::SM90, "k"), "garbage").unwrap();
        assert_eq!(cache.get(kernel, Arch::SM90, "k"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
