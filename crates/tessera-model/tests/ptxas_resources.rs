//! Every kernel compiled to SASS for sm_80 and sm_90 by `ptxas` (CUDA 13.0's,
//! from the `nvidia-cuda-nvcc` wheel scripts/python-env installs): no
//! register spills, static shared memory within the 48 KiB a block may
//! declare, and registers that let at least one block of the launch's size
//! on a multiprocessor. Needs no GPU. Prints the resource table kept in
//! kernels/README.md (`-- --nocapture`).
#![cfg(feature = "cuda")]

mod common;

use std::path::PathBuf;
use std::process::Command;

use tessera_kernel_launch::block_threads;
use tessera_model::cuda::libs::{self, CudaLibrary};
use tessera_model::cuda::{nvrtc, Arch, KERNEL_SOURCES};

/// Static shared memory one block may declare, on both architectures.
const STATIC_SMEM_LIMIT: u32 = 48 * 1024;

/// What occupancy depends on, per multiprocessor.
struct Sm {
    registers: u32,
    max_warps: u32,
    max_blocks: u32,
    /// Shared memory with the largest carve-out.
    shared: u32,
}

fn sm(arch: Arch) -> Sm {
    match arch.major {
        8 => Sm {
            registers: 65_536,
            max_warps: 64,
            max_blocks: 32,
            shared: 164 * 1024,
        },
        _ => Sm {
            registers: 65_536,
            max_warps: 64,
            max_blocks: 32,
            shared: 228 * 1024,
        },
    }
}

/// `ptxas -v`'s account of one kernel.
#[derive(Debug, Default, Clone)]
struct Resources {
    registers: u32,
    spill_stores: u32,
    spill_loads: u32,
    stack: u32,
    smem: u32,
}

impl Resources {
    /// Resident blocks per multiprocessor for blocks of `threads`, as the
    /// occupancy calculator counts: registers in 256-register units per
    /// warp, 1 KiB of shared memory reserved per block (sm_80 on).
    fn blocks_per_sm(&self, threads: u32, sm: &Sm) -> u32 {
        let warps = threads.div_ceil(32);
        let regs_per_warp = (self.registers.max(1) * 32).div_ceil(256) * 256;
        let by_regs = (sm.registers / regs_per_warp) / warps;
        let by_warps = sm.max_warps / warps;
        let by_smem = sm.shared / (self.smem.div_ceil(128) * 128 + 1024);
        by_regs.min(by_warps).min(by_smem).min(sm.max_blocks)
    }
}

fn ptxas() -> PathBuf {
    std::env::var_os("TESSERA_PTXAS")
        .map(PathBuf::from)
        .or_else(common::cuda::venv_ptxas)
        .unwrap_or_else(|| panic!("no ptxas: run scripts/python-env (the nvidia-cuda-nvcc wheel) or set TESSERA_PTXAS"))
}

/// The first number after `key` in `line`.
fn number_before(line: &str, key: &str) -> Option<u32> {
    let end = line.find(key)?;
    line[..end]
        .split(|c: char| !c.is_ascii_digit())
        .rev()
        .find(|s| !s.is_empty())?
        .parse()
        .ok()
}

/// Parses `ptxas -v` output: per entry function, its resources.
fn parse(log: &str) -> Vec<(String, Resources)> {
    let mut out: Vec<(String, Resources)> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            out.push((name, Resources::default()));
        } else if let Some((_, r)) = out.last_mut() {
            if line.contains("bytes stack frame") {
                r.stack = number_before(line, "bytes stack frame").unwrap_or(0);
                r.spill_stores = number_before(line, "bytes spill stores").unwrap_or(u32::MAX);
                r.spill_loads = number_before(line, "bytes spill loads").unwrap_or(u32::MAX);
            } else if line.contains("Used") && line.contains("registers") {
                r.registers = number_before(line, "registers").unwrap_or(u32::MAX);
                r.smem = number_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    out
}

#[test]
fn every_kernel_fits_sm80_and_sm90_without_spills() {
    let mut dirs = libs::search_dirs();
    dirs.extend(common::cuda::venv_lib_dir());
    if let Err(e) = libs::require(CudaLibrary::Nvrtc, &dirs) {
        panic!("{e}\n(run scripts/python-env, which installs nvidia-cuda-nvrtc into .venv)");
    }
    let ptxas = ptxas();
    let dir = std::env::temp_dir().join(format!("tessera-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut table = vec![
        "| kernel | arch | registers | spills (st/ld) | stack | static smem | threads | blocks/SM | occupancy |".to_string(),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |".to_string(),
    ];
    let mut failures = Vec::new();
    let mut seen = 0;
    for kernel in KERNEL_SOURCES {
        for arch in [Arch::SM80, Arch::SM90] {
            let ptx = nvrtc::compile(kernel, arch, true).unwrap_or_else(|e| panic!("{e}"));
            let file = dir.join(format!("{}.{arch}.ptx", kernel.file));
            std::fs::write(&file, &ptx.ptx).unwrap();
            let out = Command::new(&ptxas)
                .arg(format!("-arch={arch}"))
                .args(["-v", "--warn-on-spills", "-o", "/dev/null"])
                .arg(&file)
                .output()
                .unwrap_or_else(|e| panic!("{}: {e}", ptxas.display()));
            let log = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success(),
                "ptxas failed on {} for {arch}:\n{log}",
                kernel.file
            );
            let found = parse(&log);
            for f in kernel.functions {
                let Some((_, r)) = found.iter().find(|(n, _)| n == f) else {
                    failures.push(format!("{f} ({arch}): not in ptxas's output:\n{log}"));
                    continue;
                };
                seen += 1;
                let threads = block_threads(f).unwrap_or_else(|| panic!("no launch for {f}"));
                let sm = sm(arch);
                let blocks = r.blocks_per_sm(threads, &sm);
                if r.spill_stores + r.spill_loads > 0 {
                    failures.push(format!("{f} ({arch}) spills: {r:?}"));
                }
                if r.smem > STATIC_SMEM_LIMIT {
                    failures.push(format!(
                        "{f} ({arch}): {} bytes of static shared memory",
                        r.smem
                    ));
                }
                if blocks == 0 {
                    failures.push(format!(
                        "{f} ({arch}): a block of {threads} threads does not fit: {r:?}"
                    ));
                }
                let occupancy = 100 * blocks * threads.div_ceil(32) / sm.max_warps;
                table.push(format!(
                    "| `{f}` | {arch} | {} | {}/{} | {} | {} | {threads} | {blocks} | {occupancy}% |",
                    r.registers, r.spill_stores, r.spill_loads, r.stack, r.smem
                ));
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    println!("{}", table.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let expected: usize = KERNEL_SOURCES.iter().map(|k| k.functions.len()).sum();
    assert_eq!(seen, 2 * expected, "every kernel on both architectures");
}

#[test]
fn the_parser_reads_ptxas_lines() {
    let log = "ptxas info    : Compiling entry function 'k' for 'sm_90'\n\
               ptxas info    : Function properties for k\n    \
               8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
               ptxas info    : Used 40 registers, used 1 barriers, 45504 bytes smem, 448 bytes cmem[0]\n";
    let r = &parse(log)[0].1;
    assert_eq!(
        (r.stack, r.spill_stores, r.spill_loads, r.registers, r.smem),
        (8, 4, 12, 40, 45504)
    );
    // 40 registers x 128 threads: 1280 per warp, 12 blocks by registers;
    // 45504 + 1024 bytes of shared memory: 3 blocks in sm_80's 164 KiB.
    assert_eq!(r.blocks_per_sm(128, &sm(Arch::SM80)), 3);
    assert_eq!(r.blocks_per_sm(128, &sm(Arch::SM90)), 5);
}
