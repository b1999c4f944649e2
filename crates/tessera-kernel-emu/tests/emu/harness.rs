//! The harness itself: its constants agree with the kernels', and it catches
//! a missing barrier.

use tessera_kernel_emu::{run, EmuError, Variant};
use tessera_kernel_launch::{ATTENTION_THREADS, MAX_GROUP, PARTITION};

use super::attention::multi_tile_job;

/// The value of `#define NAME value` in a kernel source.
fn define(source: &str, name: &str) -> usize {
    let prefix = format!("#define {name} ");
    let line = source
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {name}"));
    line[prefix.len()..]
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn launch_constants_are_the_attention_kernels() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../kernels/attention.cu");
    let src = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(define(&src, "ATT_THREADS"), ATTENTION_THREADS as usize);
    assert_eq!(define(&src, "ATT_MAX_GROUP"), MAX_GROUP);
    assert_eq!(
        PARTITION % define(&src, "ATT_TILE"),
        0,
        "partitions are whole tiles"
    );
}

#[test]
fn thread_sanitizer_catches_attention_without_its_barrier() {
    // The same job passes under ThreadSanitizer with the barrier in
    // (attention's own tests); without it, the tile is read while written.
    let (job, _) = multi_tile_job();
    match run(&job, Variant::TsanAttentionWithoutBarrier) {
        Err(EmuError::Run { stderr, .. }) => {
            assert!(stderr.contains("ThreadSanitizer: data race"), "{stderr}");
            assert!(
                stderr.contains("attend_partition"),
                "the race is in the kernel: {stderr}"
            );
        }
        Err(e) => panic!("the mutant did not run: {e}"),
        Ok(_) => panic!("ThreadSanitizer missed the removed __syncthreads"),
    }
}
