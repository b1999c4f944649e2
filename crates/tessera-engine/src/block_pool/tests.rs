use proptest::prelude::*;

use super::*;

#[test]
fn allocate_is_all_or_nothing_and_free_returns_blocks() {
    let mut pool = BlockPool::new(4, 16, true);
    let a = pool.allocate(3).expect("3 of 4");
    assert_eq!(pool.num_free(), 1);
    assert!(pool.allocate(2).is_none());
    assert_eq!(pool.num_free(), 1, "a failed allocation takes nothing");
    pool.free(&a);
    assert_eq!(pool.num_free(), 4);
    assert!(a.iter().all(|&b| pool.ref_count(b) == 0));
}

#[test]
#[should_panic(expected = "freed twice")]
fn double_free_is_caught() {
    let mut pool = BlockPool::new(2, 16, true);
    let a = pool.allocate(1).expect("one");
    pool.free(&a);
    pool.free(&a);
}

#[test]
fn cached_prefix_is_found_shared_and_evicted_last_used_first() {
    let mut pool = BlockPool::new(4, 2, true);
    let tokens = [1, 2, 3, 4, 5, 6];
    let hashes = block_hashes(None, &tokens, 2, 3);
    let blocks = pool.allocate(3).expect("3");
    for (b, h) in blocks.iter().zip(&hashes) {
        pool.cache_full_block(*b, *h);
    }
    // While in use, a second sequence shares the first two blocks.
    let shared = pool.take_cached_prefix(&hashes[..2]);
    assert_eq!(shared, blocks[..2]);
    assert_eq!(pool.ref_count(blocks[0]), 2);
    pool.free(&shared);
    pool.free(&blocks);
    assert_eq!(pool.num_free(), 4);
    // Freed blocks stay cached; the tail block was released first, so taking two
    // fresh blocks evicts the never-used block and then the tail.
    let fresh = pool.allocate(2).expect("2");
    assert!(fresh.contains(&blocks[2]));
    assert_eq!(pool.take_cached_prefix(&hashes), blocks[..2]);
}

#[test]
fn different_prefixes_hash_differently() {
    let a = block_hashes(None, &[1, 2, 3, 4], 2, 2);
    let b = block_hashes(None, &[9, 2, 3, 4], 2, 2);
    assert_ne!(a[1], b[1], "a block's hash depends on the blocks before it");
    assert_eq!(a, block_hashes(None, &[1, 2, 3, 4, 5], 2, 2));
}

#[test]
fn disabled_prefix_caching_never_hits() {
    let mut pool = BlockPool::new(2, 2, false);
    let hashes = block_hashes(None, &[1, 2], 2, 1);
    let b = pool.allocate(1).expect("1");
    pool.cache_full_block(b[0], hashes[0]);
    assert!(pool.take_cached_prefix(&hashes).is_empty());
}

#[test]
fn untouched_blocks_wait_until_empty_ones_are_reused() {
    let mut pool = BlockPool::new(8, 2, true);
    assert_eq!(
        pool.num_touched(),
        0,
        "nothing is touched before it is needed"
    );
    let a = pool.allocate(3).expect("3");
    assert_eq!(a, [0, 1, 2], "untouched blocks go out lowest index first");
    pool.free(&a);
    let b = pool.allocate(2).expect("2");
    assert!(
        b.iter().all(|x| a.contains(x)),
        "empty blocks are reused first"
    );
    assert_eq!(pool.num_touched(), 3);
    // A cached block is kept while untouched ones remain.
    let hashes = block_hashes(None, &[7, 7], 2, 1);
    pool.cache_full_block(b[0], hashes[0]);
    pool.free(&b);
    let c = pool.allocate(6).expect("6 of 8");
    assert!(!c.contains(&b[0]), "the cached block is evicted last");
    assert_eq!(
        pool.num_touched(),
        7,
        "two empty blocks reused, four untouched taken"
    );
    assert_eq!(pool.num_free(), 2);
    assert_eq!(pool.take_cached_prefix(&hashes), [b[0]]);
    assert_eq!(pool.allocate(2), None, "one free block left after the hit");
    assert_eq!(pool.allocate(1), Some(vec![7]));
    assert_eq!(pool.num_touched(), 8);
}

#[derive(Debug, Clone)]
enum Op {
    Allocate(usize),
    FreeOne(usize),
    ShareOne(usize),
    Cache(usize, u8),
    Lookup(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..5).prop_map(Op::Allocate),
        any::<usize>().prop_map(Op::FreeOne),
        any::<usize>().prop_map(Op::ShareOne),
        (any::<usize>(), 0u8..8).prop_map(|(i, h)| Op::Cache(i, h)),
        (0u8..8).prop_map(Op::Lookup),
    ]
}

proptest! {
    /// Random allocations, shares, frees and lookups keep the books straight: the
    /// free count matches the blocks with no references, reference counts match
    /// the holders, and once every holder lets go every block is free.
    #[test]
    fn pool_accounting_holds(num_blocks in 1usize..12, ops in prop::collection::vec(op(), 1..200)) {
        let mut pool = BlockPool::new(num_blocks, 4, true);
        let mut held: Vec<BlockId> = Vec::new();
        let hash = |h: u8| block_hashes(None, &[u32::from(h); 4], 4, 1)[0];
        for op in ops {
            match op {
                Op::Allocate(n) => {
                    let before = pool.num_free();
                    match pool.allocate(n) {
                        Some(b) => { prop_assert_eq!(b.len(), n); held.extend(b); }
                        None => { prop_assert!(n > before); prop_assert_eq!(pool.num_free(), before); }
                    }
                }
                Op::FreeOne(i) if !held.is_empty() => {
                    let b = held.swap_remove(i % held.len());
                    pool.free(&[b]);
                }
                Op::ShareOne(i) if !held.is_empty() => {
                    let b = held[i % held.len()];
                    pool.share(&[b]);
                    held.push(b);
                }
                Op::Cache(i, h) if !held.is_empty() => pool.cache_full_block(held[i % held.len()], hash(h)),
                Op::Lookup(h) => held.extend(pool.take_cached_prefix(&[hash(h)])),
                _ => {}
            }
            for b in 0..num_blocks as BlockId {
                let holders = held.iter().filter(|&&x| x == b).count() as u32;
                prop_assert_eq!(pool.ref_count(b), holders);
            }
            let unused = (0..num_blocks as BlockId).filter(|&b| pool.ref_count(b) == 0).count();
            prop_assert_eq!(pool.num_free(), unused);
        }
        pool.free(&held);
        prop_assert_eq!(pool.num_free(), num_blocks);
        prop_assert_eq!(pool.allocate(num_blocks).map(|b| b.len()), Some(num_blocks));
    }

    /// Without prefix caching, the blocks ever touched are the most ever in
    /// use at once: memory follows the peak load, not the traffic's total.
    #[test]
    fn touched_blocks_follow_the_peak(num_blocks in 1usize..12, ops in prop::collection::vec(op(), 1..200)) {
        let mut pool = BlockPool::new(num_blocks, 4, false);
        let mut held: Vec<BlockId> = Vec::new();
        let mut peak = 0;
        for op in ops {
            match op {
                Op::Allocate(n) => { if let Some(b) = pool.allocate(n) { held.extend(b); } }
                Op::FreeOne(i) if !held.is_empty() => {
                    let b = held.swap_remove(i % held.len());
                    pool.free(&[b]);
                }
                _ => {}
            }
            peak = peak.max(num_blocks - pool.num_free());
            prop_assert_eq!(pool.num_touched(), peak);
        }
    }
}
