//! The harness itself: its constants agree with the kernels', it catches a
//! missing barrier, and the emulator keeps its promises (a deadlock fails, a
//! bad warp mask fails, shared memory starts poisoned, blocks run shuffled).

use tessera_kernel_emu::{run, run_with_env, Arg, EmuError, Job, Variant};
use tessera_kernel_launch::{Launch, ATTENTION_THREADS, MAX_GROUP, PARTITION};

use super::attention::multi_tile_job;
use super::support::run_all;

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

/// A 1-D launch of a self-test kernel (`kernels/emu/selftest.cu`).
fn one_dim(blocks: u32, threads: u32) -> Launch {
    Launch {
        grid: (blocks, 1, 1),
        block: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn expect_failure(job: &Job, env: &[(&str, &str)], message: &str) {
    match run_with_env(job, Variant::Plain, env) {
        Err(EmuError::Run { stderr, .. }) => assert!(stderr.contains(message), "{stderr}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("expected a failure with {message:?}"),
    }
}

#[test]
fn the_watchdog_turns_a_deadlock_into_a_failure() {
    let mut job = Job::new();
    let out = job.filled::<i32>(64, 0);
    job.launch("emu_selftest_deadlock", one_dim(1, 64), &[Arg::Buf(out)]);
    expect_failure(&job, &[("EMU_WATCHDOG_S", "1")], "watchdog: deadlock");
}

#[test]
fn a_shuffle_mask_that_leaves_out_a_calling_lane_fails() {
    let mut job = Job::new();
    let out = job.filled::<i32>(32, 0);
    job.launch("emu_selftest_bad_mask", one_dim(1, 32), &[Arg::Buf(out)]);
    expect_failure(&job, &[], "mask 0000ffff called by lane");
}

#[test]
fn unwritten_shared_memory_reads_as_poison_in_every_block() {
    let mut job = Job::new();
    let out = job.filled::<u32>(2 * 64, 0);
    job.launch(
        "emu_selftest_unwritten_shared",
        one_dim(2, 64),
        &[Arg::Buf(out)],
    );
    assert!(run_all(&job).get::<u32>(out).iter().all(|&w| w == u32::MAX));
}

#[test]
fn blocks_run_in_a_shuffled_order_and_exited_threads_leave_the_barrier() {
    let blocks = 64u32;
    let mut job = Job::new();
    let out = job.filled::<u32>(blocks as usize, 0xff);
    let ticket = job.buffer(&[0u32]);
    job.launch(
        "emu_selftest_block_order",
        one_dim(blocks, 64),
        &[Arg::Buf(out), Arg::Buf(ticket)],
    );
    let order = run_all(&job).get::<u32>(out);
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..blocks).collect::<Vec<_>>(),
        "every block ran once: {order:?}"
    );
    assert_ne!(order, sorted, "blocks ran in index order");
    let other =
        run_with_env(&job, Variant::Plain, &[("EMU_SEED", "7")]).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(other.get::<u32>(out), order, "EMU_SEED changes the order");
}

#[test]
fn address_sanitizer_catches_a_read_one_element_past_a_buffer() {
    // Row 1 of a table that holds one row and all but the last element of
    // the second: the gather's last read is one element past the buffer.
    let cols = 40usize;
    let mut job = Job::new();
    let out = job.filled::<u16>(cols, 0);
    let x = job.buffer(&vec![0u16; 2 * cols - 1]);
    let rows = job.buffer(&[1u32]);
    let args = [
        Arg::Buf(out),
        Arg::Buf(x),
        Arg::Buf(rows),
        Arg::Int(cols as i32),
    ];
    job.launch("gather_rows_bf16", Launch::rows(1).unwrap(), &args);
    match run(&job, Variant::Asan) {
        Err(EmuError::Run { stderr, .. }) => {
            assert!(stderr.contains("heap-buffer-overflow"), "{stderr}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("AddressSanitizer missed the read past the buffer"),
    }
}
