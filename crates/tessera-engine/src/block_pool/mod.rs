//! The paged-KV block pool: which blocks are free, who shares which, and which
//! full blocks still hold a reusable prefix.
//!
//! A block is *in use* while its reference count is positive. At zero it joins
//! the free list, least recently used first; if it was a full block of a prompt
//! prefix it stays findable by its hash until it is handed out again, so a later
//! request with the same prefix reuses it instead of recomputing it.
//!
//! Blocks never handed out yet are *untouched*: the runner's memory behind them
//! has not been written, and on the CPU not even committed. A block is taken,
//! in order, from the free blocks that hold nothing reusable, then from the
//! untouched ones (lowest index first), and only then by evicting the least
//! recently used cached prefix. So the memory written follows the load, and a
//! cached prefix is never evicted while the budget still has room.
//!
//! A pool for a sliding-window model sets one block aside as the *null
//! block*: it stands in a block table for the blocks a sequence has already
//! released because they lie before its attention window (the runner checks
//! that every table entry is a block of the pool, and the attention never
//! reads an entry before the window). It is never handed out, and sharing or
//! freeing it does nothing.

mod hash;

use std::collections::HashMap;

pub use hash::{block_hashes, BlockHash};

/// Index of a KV block in the runner's cache.
pub type BlockId = u32;

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Block {
    ref_count: u32,
    /// Set while the block is registered in the prefix cache.
    hash: Option<BlockHash>,
    /// Free-list links (valid while `ref_count == 0`).
    prev: u32,
    next: u32,
}

/// A fixed pool of KV blocks with reference counts, an LRU free list and a
/// prefix cache keyed by chain hashes of full blocks.
#[derive(Debug, Clone)]
pub struct BlockPool {
    blocks: Vec<Block>,
    block_size: usize,
    /// The free list: free blocks already handed out once; those holding no
    /// cached prefix at the head, cached ones after them, least recently used
    /// first.
    free_head: u32,
    free_tail: u32,
    /// Blocks `untouched..` have never been handed out (and are not listed).
    untouched: u32,
    /// Listed plus untouched blocks.
    num_free: usize,
    cached: HashMap<BlockHash, BlockId>,
    prefix_caching: bool,
    null: Option<BlockId>,
}

impl BlockPool {
    /// A pool of `num_blocks` free blocks of `block_size` tokens.
    pub fn new(num_blocks: usize, block_size: usize, prefix_caching: bool) -> Self {
        let n = u32::try_from(num_blocks).unwrap_or(NIL - 1).min(NIL - 1);
        let block = Block {
            ref_count: 0,
            hash: None,
            prev: NIL,
            next: NIL,
        };
        Self {
            blocks: vec![block; n as usize],
            block_size: block_size.max(1),
            free_head: NIL,
            free_tail: NIL,
            untouched: 0,
            num_free: n as usize,
            cached: HashMap::new(),
            prefix_caching,
            null: None,
        }
    }

    /// Sets the null block aside (once; later calls return the same block),
    /// or `None` when no block is free.
    pub fn reserve_null_block(&mut self) -> Option<BlockId> {
        if self.null.is_none() {
            let id = self.allocate(1)?[0];
            self.null = Some(id);
        }
        self.null
    }

    /// The block standing for released blocks in a block table, if reserved.
    pub fn null_block(&self) -> Option<BlockId> {
        self.null
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks in the pool.
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks not in use (some may still hold a cached prefix).
    pub fn num_free(&self) -> usize {
        self.num_free
    }

    /// Blocks ever handed out: those whose memory the runner has written.
    pub fn num_touched(&self) -> usize {
        self.untouched as usize
    }

    /// Whether full blocks are registered for reuse.
    pub fn prefix_caching(&self) -> bool {
        self.prefix_caching
    }

    /// The reference count of `block` (for tests and assertions).
    pub fn ref_count(&self, block: BlockId) -> u32 {
        self.blocks.get(block as usize).map_or(0, |b| b.ref_count)
    }

    /// Takes `n` blocks, all or nothing, evicting the least recently used cached
    /// blocks as needed. Each returned block has reference count 1.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<BlockId>> {
        if n > self.num_free {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let id = self.next_block();
            let block = &mut self.blocks[id as usize];
            block.ref_count = 1;
            if let Some(hash) = block.hash.take() {
                self.cached.remove(&hash);
            }
            out.push(id);
        }
        Some(out)
    }

    /// Adds a reference to each block (a sequence reusing a cached prefix, or a
    /// sibling sample sharing its prompt).
    pub fn share(&mut self, blocks: &[BlockId]) {
        for &id in blocks {
            if Some(id) == self.null {
                continue;
            }
            if self.blocks[id as usize].ref_count == 0 {
                self.unlink(id);
            }
            self.blocks[id as usize].ref_count += 1;
        }
    }

    /// Drops one reference to each block. Blocks are released last to first, so
    /// that a sequence's tail, the part least likely to be shared, is evicted
    /// first. Releasing a block with no references is a bug and panics.
    pub fn free(&mut self, blocks: &[BlockId]) {
        for &id in blocks.iter().rev() {
            if Some(id) == self.null {
                continue;
            }
            let block = &mut self.blocks[id as usize];
            assert!(block.ref_count > 0, "block {id} freed twice");
            block.ref_count -= 1;
            if block.ref_count == 0 {
                self.push_free(id);
            }
        }
    }

    /// The longest run of cached blocks matching `hashes` from the start. Each
    /// returned block gains a reference.
    pub fn take_cached_prefix(&mut self, hashes: &[BlockHash]) -> Vec<BlockId> {
        if !self.prefix_caching {
            return Vec::new();
        }
        let mut found = Vec::new();
        for hash in hashes {
            match self.cached.get(hash) {
                Some(&id) => found.push(id),
                None => break,
            }
        }
        self.share(&found);
        found
    }

    /// The cached block holding the prefix whose last full block hashes to
    /// `hash`, without taking it (`share` does).
    pub fn cached_block(&self, hash: &BlockHash) -> Option<BlockId> {
        if !self.prefix_caching {
            return None;
        }
        self.cached.get(hash).copied()
    }

    /// Registers a block whose tokens are all computed under its chain hash. A
    /// hash already cached (the same prefix computed twice at once) keeps its
    /// first block.
    pub fn cache_full_block(&mut self, block: BlockId, hash: BlockHash) {
        if !self.prefix_caching
            || Some(block) == self.null
            || self.blocks[block as usize].hash.is_some()
        {
            return;
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.cached.entry(hash) {
            e.insert(block);
            self.blocks[block as usize].hash = Some(hash);
        }
    }

    /// Forgets every cached prefix (the free blocks stay free).
    pub fn reset_prefix_cache(&mut self) {
        self.cached.clear();
        for block in &mut self.blocks {
            block.hash = None;
        }
    }

    /// Takes the block `allocate` hands out next (one is free): an empty
    /// listed block, else an untouched one, else the least recently used.
    fn next_block(&mut self) -> BlockId {
        let head = self.free_head;
        let head_empty = head != NIL && self.blocks[head as usize].hash.is_none();
        if !head_empty && (self.untouched as usize) < self.blocks.len() {
            self.untouched += 1;
            self.num_free -= 1;
            return self.untouched - 1;
        }
        self.unlink(head);
        head
    }

    fn unlink(&mut self, id: BlockId) {
        let (prev, next) = {
            let b = &self.blocks[id as usize];
            (b.prev, b.next)
        };
        match prev {
            NIL => self.free_head = next,
            p => self.blocks[p as usize].next = next,
        }
        match next {
            NIL => self.free_tail = prev,
            n => self.blocks[n as usize].prev = prev,
        }
        self.num_free -= 1;
    }

    /// Lists a block that became free: at the head if it holds nothing
    /// reusable, else at the tail (most recently used).
    fn push_free(&mut self, id: BlockId) {
        self.num_free += 1;
        if self.blocks[id as usize].hash.is_none() {
            let head = self.free_head;
            let b = &mut self.blocks[id as usize];
            b.prev = NIL;
            b.next = head;
            match head {
                NIL => self.free_tail = id,
                h => self.blocks[h as usize].prev = id,
            }
            self.free_head = id;
            return;
        }
        let tail = self.free_tail;
        {
            let b = &mut self.blocks[id as usize];
            b.prev = tail;
            b.next = NIL;
        }
        match tail {
            NIL => self.free_head = id,
            t => self.blocks[t as usize].next = id,
        }
        self.free_tail = id;
    }
}

#[cfg(test)]
mod tests;
