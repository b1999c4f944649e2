//! Random prompts of exact token lengths. vLLM samples token ids and decodes
//! them; that needs the vocabulary, which a server's `/tokenize` does not
//! give. Here prompts are seeded random English words, cut to the exact
//! length on token boundaries and checked by re-tokenizing: it needs only
//! encode and decode, so it works the same with a local tokenizer and with
//! the server's, and the prompt is plain text every server tokenizes alike.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{WorkItem, Workload};
use crate::error::{BenchError, Result};
use crate::tokenizer::Tokenizer;

/// The random dataset's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomSpec {
    /// Prompt tokens (after the shared prefix).
    pub input_len: usize,
    /// Output tokens.
    pub output_len: usize,
    /// Lengths are drawn uniformly from `len * (1 - r) ..= len * (1 + r)` (vLLM's rule).
    pub range_ratio: f64,
    /// Tokens of one random prefix shared by every prompt (for prefix caching).
    pub prefix_len: usize,
}

/// The words prompts are made of: common, ASCII, mostly one token each.
pub const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
    "been", "if", "more", "when", "will", "would", "who", "so", "no", "time", "people", "water",
    "house", "river", "mountain", "city", "light", "music", "garden", "window", "paper", "story",
    "family", "morning", "evening", "winter", "summer", "market", "bridge", "forest", "ocean",
    "island", "engine", "number", "letter", "question", "answer", "reason", "system", "program",
    "language", "history", "science", "animal", "friend", "teacher", "student", "doctor", "road",
    "train", "ship", "stone", "fire", "cloud", "storm", "table", "chair", "door", "wall", "field",
    "farm", "horse", "bird", "fish", "tree", "flower", "grass", "snow", "rain", "wind", "sun",
    "moon", "star", "world", "country", "village", "school", "office", "money", "price", "value",
    "power", "energy", "voice", "sound", "color", "green", "blue", "red", "black", "white",
    "small", "large", "long", "short", "early", "late", "quick", "slow", "warm", "cold", "new",
    "old", "good", "great", "simple", "clear", "strong", "quiet", "bright", "open", "close",
    "walk", "run", "read", "write", "speak", "listen", "build", "carry", "hold", "bring", "find",
    "give", "keep", "learn", "move", "play", "show", "think", "turn", "watch", "begin", "follow",
    "change", "grow", "happen", "remember", "travel", "always", "never", "often", "again",
    "together", "before", "after", "under", "over", "between", "through", "across", "around",
    "inside", "outside", "because", "while",
];

/// Most re-tokenizing rounds per prompt before settling for the nearest length.
const MAX_ROUNDS: usize = 16;

/// The inclusive range of lengths around `len`: vLLM's
/// `[int(len * (1 - r)), int(len * (1 + r))]`, never below 1.
pub fn length_range(len: usize, range_ratio: f64) -> (usize, usize) {
    let lo = ((len as f64) * (1.0 - range_ratio)).floor().max(1.0) as usize;
    let hi = ((len as f64) * (1.0 + range_ratio)).floor().max(lo as f64) as usize;
    (lo, hi)
}

pub(super) async fn generate(
    spec: &RandomSpec,
    tok: &Tokenizer,
    count: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Workload> {
    if !(0.0..1.0).contains(&spec.range_ratio) {
        return Err(BenchError::Usage(format!(
            "--range-ratio must be in [0, 1), not {}",
            spec.range_ratio
        )));
    }
    if spec.input_len == 0 || spec.output_len == 0 {
        return Err(BenchError::Usage(
            "--input-len and --output-len must be at least 1".into(),
        ));
    }
    let (in_lo, in_hi) = length_range(spec.input_len, spec.range_ratio);
    let (out_lo, out_hi) = length_range(spec.output_len, spec.range_ratio);
    // Lengths first, then text: the lengths of a seed do not depend on the tokenizer.
    let lengths: Vec<(usize, usize)> = (0..count)
        .map(|_| {
            (
                rng.random_range(in_lo..=in_hi),
                rng.random_range(out_lo..=out_hi),
            )
        })
        .collect();
    let prefix = if spec.prefix_len > 0 {
        exact_text(tok, rng, "", spec.prefix_len).await?.0
    } else {
        String::new()
    };
    let mut inexact = 0;
    let mut items = Vec::with_capacity(count);
    for (input_len, output_len) in lengths {
        let target = spec.prefix_len + input_len;
        let (prompt, prompt_len) = exact_text(tok, rng, &prefix, target).await?;
        inexact += usize::from(prompt_len != target);
        items.push(WorkItem {
            prompt,
            prompt_len,
            output_len,
        });
    }
    let mut notes = Vec::new();
    if inexact > 0 {
        notes.push(format!(
            "{inexact} random prompts could not be cut to their exact length (their record has the real one)"
        ));
    }
    Ok(Workload { items, notes })
}

/// Text starting with `base` of exactly `target` tokens, or the nearest
/// reached, with its length: random words are added until it is long enough,
/// then the token ids are cut at `target` and decoded, and the text is
/// tokenized again (a cut can merge or split at the boundary).
async fn exact_text(
    tok: &Tokenizer,
    rng: &mut ChaCha8Rng,
    base: &str,
    target: usize,
) -> Result<(String, usize)> {
    let mut text = base.to_string();
    add_words(&mut text, rng, target);
    for _ in 0..MAX_ROUNDS {
        let ids = tok.encode(&text).await?;
        let len = ids.len();
        match len.cmp(&target) {
            std::cmp::Ordering::Equal => return Ok((text, len)),
            std::cmp::Ordering::Less => add_words(&mut text, rng, target - len),
            std::cmp::Ordering::Greater => text = tok.decode(&ids[..target]).await?,
        }
    }
    let len = tok.encode(&text).await?.len();
    Ok((text, len))
}

fn add_words(text: &mut String, rng: &mut ChaCha8Rng, n: usize) {
    for _ in 0..n {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
}

#[cfg(test)]
mod tests {
    use super::length_range;

    #[test]
    fn length_ranges_follow_vllm() {
        assert_eq!(length_range(128, 0.0), (128, 128));
        assert_eq!(length_range(100, 0.5), (50, 150));
        assert_eq!(length_range(10, 0.25), (7, 12)); // int(7.5), int(12.5)
        assert_eq!(length_range(1, 0.9), (1, 1));
    }
}
