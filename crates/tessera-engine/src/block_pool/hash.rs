//! Chain hashes of full KV blocks: a block's hash covers its tokens and, through
//! its parent's hash, every token before it, so equal hashes mean equal prefixes.

use std::hash::{Hash, Hasher};

/// 128-bit chain hash of a full block (two independent 64-bit SipHashes: a
/// collision would silently reuse the wrong KV, so 64 bits are not enough).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockHash(pub u64, pub u64);

fn sip(salt: u64, parent: Option<BlockHash>, tokens: &[u32]) -> u64 {
    // SipHash-2-4 with fixed keys: stable across runs, and std's (deprecated only
    // in favour of DefaultHasher, whose algorithm is unspecified).
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new_with_keys(salt, !salt);
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// Hashes of the first `num_blocks` full blocks of `tokens`, continuing the chain
/// after `parent` (the hash of the block before `tokens[0]`, if any).
pub fn block_hashes(
    parent: Option<BlockHash>,
    tokens: &[u32],
    block_size: usize,
    num_blocks: usize,
) -> Vec<BlockHash> {
    let mut out = Vec::with_capacity(num_blocks);
    let mut prev = parent;
    for chunk in tokens.chunks_exact(block_size).take(num_blocks) {
        let h = BlockHash(
            sip(0x7465_7373_6572_6131, prev, chunk),
            sip(0x6b76_2d62_6c6f_636b, prev, chunk),
        );
        out.push(h);
        prev = Some(h);
    }
    out
}
