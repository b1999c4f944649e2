//! The scheduler with a sliding window: blocks behind every sequence's window
//! go back to the pool, the pool then runs more sequences at once, and a
//! cached prefix is reused exactly when the blocks its window reads are
//! cached.

use super::tests::run_step;
use super::*;
use crate::block_pool::block_hashes;

const BS: usize = 4;
const WINDOW: usize = 8;

fn scheduler(num_blocks: usize, window: Option<usize>) -> Scheduler {
    Scheduler::new(
        SchedulerConfig {
            max_num_batched_tokens: 64,
            max_num_seqs: 16,
            max_batch_seqs: 16,
            max_batch_prefill_tokens: 64,
            hold_batch_for_interactive_prefill: false,
            whole_prompts: false,
            sliding_window: window,
        },
        BlockPool::new(num_blocks, BS, true),
    )
}

fn seq(id: SeqId, prompt: Vec<u32>) -> Sequence {
    Sequence::new(id, Priority::Interactive, id, prompt, Vec::new(), BS)
}

/// Blocks a sequence holds (its null entries excluded).
fn held(s: &Scheduler, id: SeqId) -> usize {
    let null = s.pool().null_block();
    let seq = s.get(id).expect("sequence");
    seq.block_table.iter().filter(|&&b| Some(b) != null).count()
}

#[test]
fn blocks_behind_the_window_go_back_to_the_pool() {
    let mut s = scheduler(64, Some(WINDOW));
    let null = s.pool().null_block().expect("a null block is set aside");
    assert_eq!(s.pool().num_free(), 63);
    s.add(seq(1, vec![5; 3]));
    let window = s.sliding_window().expect("window");
    for _ in 0..40 {
        let plan = s.schedule();
        let seq = s.get(1).expect("sequence");
        let behind = window.blocks_before(seq.num_computed);
        assert!(seq.block_table[..behind].iter().all(|&b| b == null));
        assert!(seq.block_table[behind..].iter().all(|&b| b != null));
        // The token at `num_computed` reads 8 positions: at most 3 blocks,
        // one of them the one it is written to.
        assert!(held(&s, 1) <= 3, "{} blocks held", held(&s, 1));
        assert_eq!(s.pool().num_free() + held(&s, 1) + 1, 64);
        run_step(&mut s, &plan);
    }
    let seq = s.get(1).expect("sequence");
    assert_eq!(seq.num_computed, 42);
    assert_eq!(seq.block_table.len(), 11);
    assert_eq!(seq.num_released, 8);
    // Finishing frees the rest, and the null block stays set aside.
    s.remove(1);
    assert_eq!(s.pool().num_free(), 63);
}

/// Runs four sequences to 48 tokens each on a pool of 16 blocks; returns
/// the preemptions.
fn run_four_long_sequences(window: Option<usize>) -> u64 {
    let mut s = scheduler(16, window);
    for id in 1..=4 {
        s.add(seq(id, vec![id as u32; 6]));
    }
    let mut done = 0;
    for _ in 0..1000 {
        let plan = s.schedule();
        run_step(&mut s, &plan);
        for id in 1..=4 {
            if s.get(id).is_some_and(|q| q.tokens.len() >= 48) {
                s.remove(id);
                done += 1;
            }
        }
        if done == 4 {
            return s.num_preemptions();
        }
    }
    panic!("the sequences did not finish");
}

#[test]
fn the_window_bound_lets_more_sequences_hold_their_kv() {
    // Without a window four sequences of 12 blocks do not fit in 16 blocks.
    assert!(run_four_long_sequences(None) > 0);
    // With one, each holds at most 3 blocks: 12 of the 15 usable.
    assert_eq!(run_four_long_sequences(Some(WINDOW)), 0);
}

/// A scheduler whose prefix cache holds the blocks of `prompt` marked in
/// `cached` (each released, so only the cache keeps it).
fn with_cached(window: Option<usize>, prompt: &[u32], cached: &[bool]) -> (Scheduler, Vec<u32>) {
    let mut s = scheduler(64, window);
    let hashes = block_hashes(None, prompt, BS, cached.len());
    let blocks = s.pool.allocate(cached.len()).expect("room");
    for ((&block, hash), &keep) in blocks.iter().zip(hashes).zip(cached) {
        if keep {
            s.pool.cache_full_block(block, hash);
        }
    }
    s.pool.free(&blocks);
    (s, blocks)
}

#[test]
fn a_prefix_hit_needs_only_the_blocks_its_window_reads() {
    let prompt: Vec<u32> = (0..21).collect();
    // Blocks 0 and 1 evicted: without a window nothing is reusable...
    let (mut s, _) = with_cached(None, &prompt, &[false, false, true, true, true]);
    s.add(seq(1, prompt.clone()));
    assert_eq!(s.schedule()[0].num_tokens, 21);
    // ...with one, all 5 blocks are: the token at 20 reads 13..=20, so only
    // blocks 3 and 4 must be there.
    let (mut s, blocks) = with_cached(Some(WINDOW), &prompt, &[false, false, true, true, true]);
    s.add(seq(1, prompt.clone()));
    assert_eq!(s.schedule()[0].num_tokens, 1);
    let null = s.pool().null_block().expect("null block");
    let q = s.get(1).expect("sequence");
    assert_eq!(q.block_table[..5], [null, null, null, blocks[3], blocks[4]]);
    assert_eq!(
        (q.num_computed, q.num_released, q.num_cached_blocks),
        (20, 3, 5)
    );
    assert_eq!(s.pool().ref_count(blocks[2]), 0, "block 2 is not taken");
    assert_eq!(s.pool().ref_count(blocks[3]), 1);
    assert_eq!(s.prefix_cache_stats().hit_blocks, 5);

    // Block 3 evicted: prefixes of 4 and 5 blocks would read it, 3 do not.
    let (mut s, blocks) = with_cached(Some(WINDOW), &prompt, &[true, true, true, false, true]);
    s.add(seq(1, prompt.clone()));
    assert_eq!(s.schedule()[0].num_tokens, 21 - 12);
    let q = s.get(1).expect("sequence");
    assert_eq!(q.block_table[..3], [null, blocks[1], blocks[2]]);
    assert_eq!(s.pool().ref_count(blocks[4]), 0, "block 4 is not taken");
}

#[test]
fn a_sibling_shares_a_prompt_only_while_its_window_is_held() {
    let mut s = scheduler(64, Some(WINDOW));
    s.add(seq(1, vec![3; 16]));
    let plan = s.schedule();
    run_step(&mut s, &plan);
    // The prompt is computed and nothing released yet: a sibling starting at
    // token 12 gets the three full blocks.
    assert_eq!(s.share_blocks(1, 3).len(), 3);
    // Two decode steps later blocks 0 and 1 are released; the sibling's
    // token 12 reads block 1, so it must compute its prompt itself.
    for _ in 0..2 {
        let plan = s.schedule();
        run_step(&mut s, &plan);
    }
    assert_eq!(s.get(1).expect("sequence").num_released, 2);
    assert!(s.share_blocks(1, 3).is_empty());
}
