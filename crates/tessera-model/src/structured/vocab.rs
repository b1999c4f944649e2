//! A model's vocabulary as llguidance sees it: every token's bytes in a
//! `TokTrie`, and tokenization by the model's own tokenizer.

use std::sync::Arc;

use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

use crate::tokenizer::Tokenizer;

/// Why a vocabulary could not be prepared for structured output.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("structured output is unavailable for this tokenizer: {0}")]
pub struct VocabError(pub String);

/// Builds the token trie of `tokenizer`, `vocab_size` wide.
pub(super) fn tok_env(tokenizer: Arc<Tokenizer>, vocab_size: usize) -> Result<TokEnv, VocabError> {
    let json = tokenizer.to_json().map_err(|e| VocabError(e.to_string()))?;
    // llguidance asserts on vocabularies it does not expect; that is an
    // error for this model, not a crash of the server.
    let bytes = std::panic::catch_unwind(|| llguidance::token_bytes_from_tokenizer_json(&json))
        .map_err(|_| VocabError("unrecognised token encoding".into()))?
        .map_err(|e| VocabError(e.to_string()))?;
    let mut words = bytes;
    let width = vocab_size.max(words.len());
    words.resize(width, Vec::new());
    let eos = tokenizer.eos_token_ids().to_vec();
    let Some(&first_eos) = eos.first() else {
        return Err(VocabError("the model has no end-of-sequence token".into()));
    };
    if eos.iter().any(|&t| t as usize >= width) {
        return Err(VocabError(
            "an end-of-sequence token is outside the vocabulary".into(),
        ));
    }
    let info = TokRxInfo::new(width as u32, first_eos);
    let trie = TokTrie::from(&info, &words).with_eos_tokens(&eos);
    Ok(Arc::new(ModelVocab { trie, tokenizer }))
}

/// The trie plus the tokenizer, for llguidance's forced-token handling.
struct ModelVocab {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl TokenizerEnv for ModelVocab {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |text| {
            self.tokenizer.encode(text, false).unwrap_or_default()
        })
    }
}
