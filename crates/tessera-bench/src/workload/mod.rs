//! The requests a benchmark sends, built before anything is measured (so
//! tokenizing never competes with the server), reproducibly from `--seed`.

mod files;
mod random;

use std::path::PathBuf;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use random::{length_range, RandomSpec, WORDS};

use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// One request to send.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkItem {
    /// The prompt (completions) or the user message (chat).
    pub prompt: String,
    /// Its length in tokens by the benchmark's tokenizer.
    pub prompt_len: usize,
    /// Output tokens to ask for (`max_tokens`).
    pub output_len: usize,
}

/// Where prompts come from.
#[derive(Debug, Clone)]
pub enum Dataset {
    /// Random prompts of exact token lengths.
    Random(RandomSpec),
    /// A JSONL file: one `{"prompt": "...", "output_len": N}` per line
    /// (`output_len` optional; other fields are not used).
    Jsonl {
        /// The file.
        path: PathBuf,
        /// Output tokens for lines without `output_len`.
        output_len: usize,
        /// Keep the file's order instead of a seeded shuffle.
        no_shuffle: bool,
    },
    /// ShareGPT conversations (a JSON array of `{"conversations": [{"value"}, ...]}`):
    /// the first turn is the prompt, the second's length the output length.
    ShareGpt {
        /// The file.
        path: PathBuf,
        /// Output tokens for every request instead of the reply's length.
        output_len: Option<usize>,
        /// Keep the file's order instead of a seeded shuffle.
        no_shuffle: bool,
    },
}

/// A built workload: the requests, and notes on anything that departs from
/// what was asked (prompts reused, lengths not exact).
#[derive(Debug, Clone, Default)]
pub struct Workload {
    /// The requests, in sending order.
    pub items: Vec<WorkItem>,
    /// Printed and kept in the report.
    pub notes: Vec<String>,
}

/// Builds `count` requests from `dataset`, the same ones for the same seed.
pub async fn build(
    dataset: &Dataset,
    tokenizer: &Tokenizer,
    count: usize,
    seed: u64,
) -> Result<Workload> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    match dataset {
        Dataset::Random(spec) => random::generate(spec, tokenizer, count, &mut rng).await,
        Dataset::Jsonl {
            path,
            output_len,
            no_shuffle,
        } => files::jsonl(path, *output_len, *no_shuffle, tokenizer, count, &mut rng).await,
        Dataset::ShareGpt {
            path,
            output_len,
            no_shuffle,
        } => files::sharegpt(path, *output_len, *no_shuffle, tokenizer, count, &mut rng).await,
    }
}

/// `count` entries of `pool` in a seeded random order (or in order), cycling
/// through it again when it is shorter; with a note when entries repeat
/// (a repeated prompt can hit the server's prefix cache).
fn sample<T: Clone>(
    pool: &[T],
    count: usize,
    shuffle: bool,
    rng: &mut ChaCha8Rng,
    notes: &mut Vec<String>,
) -> Vec<T> {
    let mut order: Vec<usize> = (0..pool.len()).collect();
    if shuffle {
        order.shuffle(rng);
    }
    if count > pool.len() && !pool.is_empty() {
        notes.push(format!(
            "only {} usable prompts for {count} requests: prompts repeat (prefix caches may hit)",
            pool.len()
        ));
    }
    order
        .iter()
        .cycle()
        .take(count)
        .map(|&i| pool[i].clone())
        .collect()
}
