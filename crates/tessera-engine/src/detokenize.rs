//! Incremental detokenization: text deltas out of a growing token sequence.
//!
//! Decoding tokens one at a time is wrong in two ways: a UTF-8 character can span
//! several byte-level tokens, and some tokenizers render a token differently
//! depending on what precedes it (SentencePiece's leading space). So each step
//! decodes a short window twice, with and without the new tokens, and emits the
//! difference, holding text back while it ends in an incomplete character.

/// Turns token ids back into text.
pub trait TokenDecoder {
    /// Decodes `ids` into text, skipping special tokens when asked.
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, String>;
}

/// Prompt tokens kept as left context for the first generated tokens.
const PROMPT_CONTEXT: usize = 5;

/// Streams the text of generated tokens, one delta per pushed token.
#[derive(Debug, Clone)]
pub struct IncrementalDetokenizer {
    /// The window still needed: context tokens, then tokens not yet emitted.
    ids: Vec<u32>,
    /// Start of the context whose text was already emitted (or is prompt).
    prefix_offset: usize,
    /// Tokens before this one have had their text emitted.
    read_offset: usize,
    skip_special_tokens: bool,
}

impl IncrementalDetokenizer {
    /// A detokenizer for text that follows `prompt`.
    pub fn new(prompt: &[u32], skip_special_tokens: bool) -> Self {
        let context = &prompt[prompt.len().saturating_sub(PROMPT_CONTEXT)..];
        Self {
            ids: context.to_vec(),
            prefix_offset: 0,
            read_offset: context.len(),
            skip_special_tokens,
        }
    }

    /// Adds a generated token and returns the text that is now certain, possibly
    /// empty (an incomplete character is held back until its last byte comes).
    pub fn push(&mut self, decoder: &impl TokenDecoder, id: u32) -> Result<String, String> {
        self.ids.push(id);
        let prefix = decoder.decode(
            &self.ids[self.prefix_offset..self.read_offset],
            self.skip_special_tokens,
        )?;
        let full = decoder.decode(&self.ids[self.prefix_offset..], self.skip_special_tokens)?;
        if full.len() <= prefix.len() || full.ends_with(char::REPLACEMENT_CHARACTER) {
            return Ok(String::new());
        }
        let delta = text_after(&prefix, &full).to_string();
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        // Everything before the new prefix is emitted and no longer needed.
        self.ids.drain(..self.prefix_offset);
        self.read_offset -= self.prefix_offset;
        self.prefix_offset = 0;
        Ok(delta)
    }

    /// The text still held back, emitted as is at the end of the sequence (an
    /// incomplete character comes out as U+FFFD, as a full decode would give).
    pub fn flush(&mut self, decoder: &impl TokenDecoder) -> Result<String, String> {
        if self.read_offset == self.ids.len() {
            return Ok(String::new());
        }
        let prefix = decoder.decode(
            &self.ids[self.prefix_offset..self.read_offset],
            self.skip_special_tokens,
        )?;
        let full = decoder.decode(&self.ids[self.prefix_offset..], self.skip_special_tokens)?;
        self.read_offset = self.ids.len();
        Ok(text_after(&prefix, &full).to_string())
    }
}

/// `full` minus its leading `prefix`; if decoding changed the prefix's text
/// (rare), the part after their longest common prefix, cut at a char boundary.
fn text_after<'a>(prefix: &str, full: &'a str) -> &'a str {
    if let Some(rest) = full.strip_prefix(prefix) {
        return rest;
    }
    let common = prefix
        .char_indices()
        .zip(full.chars())
        .find(|((_, a), b)| a != b)
        .map_or(prefix.len().min(full.len()), |((i, _), _)| i);
    let mut cut = common;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    &full[cut..]
}

#[cfg(test)]
mod tests;
