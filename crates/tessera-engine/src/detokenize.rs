//! Incremental detokenization (placeholder, being written).

/// Turns token ids back into text.
pub trait TokenDecoder {
    /// Decodes `ids` into text, skipping special tokens when asked.
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, String>;
}

/// Streams text out of a growing token sequence.
pub struct IncrementalDetokenizer;
