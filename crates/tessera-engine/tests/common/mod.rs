//! A fake model for engine tests: its logits are a hash of the whole context,
//! read back through the paged KV cache, so any mistake in block tables, prefix
//! sharing or recompute after preemption changes the output.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tessera_engine::{Batch, Logits, Runner, TokenDecoder};

pub const VOCAB: usize = 64;
pub const EOS: u32 = 63;
/// A prompt starting with this token makes the model emit [`SCRIPT`] by position.
pub const SCRIPTED: u32 = 62;
/// The bytes of "é" then "🙂", one token per byte.
pub const SCRIPT: [u32; 6] = [26, 27, 28, 29, 30, 31];

/// Errors of the fake runner: a batch that reads KV nobody wrote.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FakeError(String);

impl FakeError {
    pub fn new(message: &str) -> Self {
        Self(message.to_string())
    }
}

/// A model whose "KV" is the token id stored in each slot.
pub struct HashModel {
    block_size: usize,
    num_blocks: usize,
    max_len: usize,
    slots: Vec<Option<(u32, usize)>>,
    /// Tokens computed, over all calls.
    pub computed: Arc<AtomicUsize>,
    /// When set, each `execute` waits for the mutex (tests hold it to stall the engine).
    pub gate: Option<Arc<Mutex<()>>>,
}

impl HashModel {
    pub fn new(num_blocks: usize, block_size: usize, max_len: usize) -> Self {
        Self {
            block_size,
            num_blocks,
            max_len,
            slots: vec![None; num_blocks * block_size],
            computed: Arc::new(AtomicUsize::new(0)),
            gate: None,
        }
    }

    fn slot(&self, table: &[u32], pos: usize) -> Result<usize, FakeError> {
        let block = *table
            .get(pos / self.block_size)
            .ok_or_else(|| FakeError(format!("position {pos} past the block table")))?;
        if block as usize >= self.num_blocks {
            return Err(FakeError(format!("block {block} past the pool")));
        }
        Ok(block as usize * self.block_size + pos % self.block_size)
    }
}

/// Pseudo-random logits from the context: a few tokens are clearly likely, so
/// greedy and sampled runs both produce varied text.
pub fn logits_for(context: &[u32]) -> Vec<f32> {
    if context.first() == Some(&SCRIPTED) {
        // Scripted mode: the token at position p is SCRIPT[p % 6].
        let mut logits = vec![0.0; VOCAB];
        logits[SCRIPT[context.len() % SCRIPT.len()] as usize] = 10.0;
        return logits;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &t in context {
        h = (h ^ u64::from(t)).wrapping_mul(0x1000_0000_01b3);
    }
    (0..VOCAB as u64)
        .map(|v| {
            let mut x = h ^ v.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            x ^= x >> 33;
            x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
            x ^= x >> 33;
            let u = (x >> 40) as f32 / (1u64 << 24) as f32;
            // EOS is rare, so sequences usually run to max_tokens; the byte
            // tokens of multi-byte characters only come out in scripted mode.
            match v as u32 {
                EOS => u * 2.0 - 1.0,
                26..=31 => u - 30.0,
                _ => u * 6.0,
            }
        })
        .collect()
}

impl Runner for HashModel {
    type Error = FakeError;

    fn block_size(&self) -> usize {
        self.block_size
    }

    fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    fn max_model_len(&self) -> usize {
        self.max_len
    }

    fn execute(&mut self, batch: &Batch) -> Result<Logits, FakeError> {
        let gate = self.gate.clone();
        let _held = gate.as_ref().map(|g| g.lock());
        let mut data = Vec::new();
        for chunk in &batch.chunks {
            for (i, &t) in chunk.token_ids.iter().enumerate() {
                let pos = chunk.start_position + i;
                let slot = self.slot(&chunk.block_table, pos)?;
                self.slots[slot] = Some((t, pos));
            }
            self.computed
                .fetch_add(chunk.token_ids.len(), Ordering::Relaxed);
            if chunk.wants_logits {
                let mut context = Vec::with_capacity(chunk.context_len());
                for pos in 0..chunk.context_len() {
                    match self.slots[self.slot(&chunk.block_table, pos)?] {
                        Some((t, p)) if p == pos => context.push(t),
                        _ => {
                            return Err(FakeError(format!(
                                "KV of position {pos} was never written"
                            )))
                        }
                    }
                }
                data.extend(logits_for(&context));
            }
        }
        Ok(Logits {
            vocab_size: VOCAB,
            data,
        })
    }
}

/// Tokens as text: 0..26 are letters with a leading space, 26..32 are the two
/// bytes of "é" and the four of "🙂" (split across tokens), the rest punctuation.
pub struct ByteDecoder;

pub fn token_bytes(t: u32) -> Vec<u8> {
    match t {
        0..=25 => vec![b' ', b'a' + t as u8],
        26 => vec![0xC3],
        27 => vec![0xA9],
        28 => vec![0xF0],
        29 => vec![0x9F],
        30 => vec![0x99],
        31 => vec![0x82],
        EOS => Vec::new(),
        _ => vec![b"!?.,;:-+*/<>=#@%&"[(t as usize - 32) % 17]],
    }
}

impl TokenDecoder for ByteDecoder {
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, String> {
        let mut bytes = Vec::new();
        for &id in ids {
            if id as usize >= VOCAB {
                return Err(format!("token {id} out of range"));
            }
            if id == EOS && !skip_special_tokens {
                bytes.extend_from_slice(b"</s>");
            }
            bytes.extend(token_bytes(id));
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}
