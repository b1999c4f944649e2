use proptest::prelude::*;

use super::*;

/// A byte-level vocabulary: each token is some bytes; decoding concatenates them
/// and replaces invalid UTF-8, as byte-level BPE tokenizers do.
struct Bytes(Vec<Vec<u8>>);

impl TokenDecoder for Bytes {
    fn decode(&self, ids: &[u32], _skip: bool) -> Result<String, String> {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&i| self.0[i as usize].clone())
            .collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// A word vocabulary that needs left context: words are joined by spaces, with
/// no space before the first, like SentencePiece's stripped prefix space.
struct Words(Vec<&'static str>);

impl TokenDecoder for Words {
    fn decode(&self, ids: &[u32], _skip: bool) -> Result<String, String> {
        let words: Vec<&str> = ids.iter().map(|&i| self.0[i as usize]).collect();
        Ok(words.join(" "))
    }
}

fn stream(decoder: &impl TokenDecoder, prompt: &[u32], ids: &[u32]) -> Vec<String> {
    let mut detok = IncrementalDetokenizer::new(prompt, false);
    let mut chunks: Vec<String> = ids
        .iter()
        .map(|&id| detok.push(decoder, id).unwrap())
        .collect();
    chunks.push(detok.flush(decoder).unwrap());
    chunks
}

#[test]
fn multibyte_characters_are_never_split_across_chunks() {
    // "é" = C3 A9, "🙂" = F0 9F 99 82, each byte its own token.
    let text = "aé🙂b";
    let vocab = Bytes(text.bytes().map(|b| vec![b]).collect());
    let ids: Vec<u32> = (0..text.len() as u32).collect();
    let chunks = stream(&vocab, &[], &ids);
    assert_eq!(chunks.concat(), text);
    let nonempty: Vec<&str> = chunks
        .iter()
        .map(String::as_str)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(nonempty, ["a", "é", "🙂", "b"]);
}

#[test]
fn left_context_keeps_the_spaces_between_words() {
    let vocab = Words(vec!["hello", "big", "world"]);
    // The prompt's last word gives the first generated word its space.
    assert_eq!(stream(&vocab, &[0], &[1, 2]).concat(), " big world");
    assert_eq!(stream(&vocab, &[], &[0, 1, 2]).concat(), "hello big world");
}

#[test]
fn an_incomplete_character_at_the_end_is_flushed_as_a_replacement() {
    let vocab = Bytes(vec![b"a".to_vec(), vec![0xE2, 0x82]]);
    let chunks = stream(&vocab, &[], &[0, 1]);
    assert_eq!(chunks, ["a", "", "\u{FFFD}"]);
}

proptest! {
    /// Any text cut into arbitrary byte tokens streams back exactly, and no chunk
    /// holds a replacement character.
    #[test]
    fn streamed_chunks_concatenate_to_the_text(text in "\\PC{0,40}", cuts in prop::collection::vec(1usize..5, 1..60)) {
        let bytes = text.as_bytes();
        let mut vocab = Vec::new();
        let mut at = 0;
        for cut in cuts.iter().cycle() {
            if at >= bytes.len() { break; }
            let end = (at + cut).min(bytes.len());
            vocab.push(bytes[at..end].to_vec());
            at = end;
        }
        let ids: Vec<u32> = (0..vocab.len() as u32).collect();
        let chunks = stream(&Bytes(vocab), &[], &ids);
        prop_assume!(!text.contains(char::REPLACEMENT_CHARACTER));
        prop_assert!(chunks.iter().all(|c| !c.contains(char::REPLACEMENT_CHARACTER)));
        prop_assert_eq!(chunks.concat(), text);
    }
}
