//! Sliding-window attention on the KV side: which leading blocks of a
//! sequence no future token reads, how many blocks a sequence holds at most,
//! and how much of a cached prefix is usable when only the blocks inside the
//! window of the first recomputed token have to be present.

/// The attention window of a model whose every layer lets a token at
/// position `p` read the keys at `p + 1 - window ..= p` (Hugging Face's and
/// vLLM's `p - j < window`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindow {
    /// Positions a token reads, itself included.
    pub window: usize,
    /// Tokens per KV block.
    pub block_size: usize,
}

impl SlidingWindow {
    /// A window of `window` positions over blocks of `block_size` tokens;
    /// `None` for a window of zero (no window).
    pub fn new(window: usize, block_size: usize) -> Option<Self> {
        (window > 0 && block_size > 0).then_some(Self { window, block_size })
    }

    /// Leading blocks that no token at position `next` or later reads.
    pub fn blocks_before(&self, next: usize) -> usize {
        (next + 1).saturating_sub(self.window) / self.block_size
    }

    /// Most blocks a sequence holds in a step that computes `chunk` tokens
    /// (its blocks before the window released): the window behind the
    /// chunk's first token, the chunk, and one partial block at each end.
    pub fn max_blocks_held(&self, chunk: usize) -> usize {
        (self.window + chunk).div_ceil(self.block_size) + 2
    }

    /// The longest usable cached prefix, in blocks: `cached[i]` says whether
    /// full block `i` of the prompt is in the prefix cache, and a prefix of
    /// `k` blocks is usable when the blocks from `blocks_before(k *
    /// block_size)` up to `k` all are (the ones before them are never read
    /// again, so they need not be). vLLM's sliding-window manager takes the
    /// same rule.
    pub fn longest_hit(&self, cached: impl IntoIterator<Item = bool>) -> usize {
        let (mut run, mut best) = (0, 0);
        for (i, hit) in cached.into_iter().enumerate() {
            run = if hit { run + 1 } else { 0 };
            let k = i + 1;
            if run >= k - self.blocks_before(k * self.block_size) {
                best = k;
            }
        }
        best
    }
}

/// [`SlidingWindow::blocks_before`], zero without a window.
pub fn blocks_before(window: Option<SlidingWindow>, next: usize) -> usize {
    window.map_or(0, |w| w.blocks_before(next))
}

/// [`SlidingWindow::longest_hit`]; without a window, the leading run of
/// cached blocks.
pub fn longest_hit(window: Option<SlidingWindow>, cached: impl IntoIterator<Item = bool>) -> usize {
    match window {
        Some(w) => w.longest_hit(cached),
        None => cached.into_iter().take_while(|&hit| hit).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: SlidingWindow = SlidingWindow {
        window: 8,
        block_size: 4,
    };

    #[test]
    fn a_block_is_released_once_the_next_token_no_longer_reads_it() {
        // The token at 11 reads 4..=11: block 0 (0..4) is behind it.
        assert_eq!(W.blocks_before(10), 0);
        assert_eq!(W.blocks_before(11), 1);
        assert_eq!(W.blocks_before(14), 1);
        assert_eq!(W.blocks_before(15), 2);
        assert_eq!(blocks_before(None, 1000), 0);
    }

    #[test]
    fn a_hit_needs_only_the_blocks_inside_the_window() {
        // Block 0 evicted, 1..=3 cached: a prefix of all 4 blocks (16
        // tokens) needs only blocks 2 and 3 (the token at 16 reads 9..=16).
        let cached = [false, true, true, true];
        assert_eq!(W.longest_hit(cached), 4);
        // Without a window nothing is usable.
        assert_eq!(longest_hit(None, cached), 0);
        // A hole in block 3: prefixes of 4 and 5 blocks would read it, one
        // of 3 does not (the token at 12 reads blocks 1 and 2).
        assert_eq!(W.longest_hit([true, true, true, false, true]), 3);
        // Past the hole the window has moved on: 6 blocks need only 4 and 5.
        assert_eq!(W.longest_hit([true, true, true, false, true, true]), 6);
        assert_eq!(W.longest_hit([]), 0);
    }

    #[test]
    fn the_bound_covers_the_worst_alignment() {
        for next in 0..64usize {
            for chunk in 1..20 {
                let held = (next + chunk).div_ceil(W.block_size) - W.blocks_before(next);
                assert!(held <= W.max_blocks_held(chunk), "{next} {chunk}");
            }
        }
    }
}
