//! A batch's per-token and per-sequence arrays on the device: positions, KV
//! slots, each token's sequence, the block tables and where each sequence's
//! table starts.
//!
//! They are checked and packed into one `u32` buffer with one copy when a
//! forward first needs them (layer 0's rotary write) and reused by every
//! later layer's rotary write and attention: the backend keeps the last
//! batch it uploaded and compares the next request against it by value (a
//! few thousand integers; far cheaper than a copy per layer).
//!
//! The checks are what keep the kernels inside their buffers: a token's keys
//! are read through its sequence's table, so every table must cover its
//! sequence's context and name blocks of the pool, and every slot must be in
//! the pool. `FlatBatch::new` checks the same for the engine's batches;
//! here they also cover a `FlatBatch` built by hand.

use cudarc::driver::{CudaSlice, CudaView};

use crate::batch::FlatBatch;

use super::error::CudaBackendError;
use super::memory::DeviceMemory;

/// A batch packed for the kernels (host side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Packed {
    /// positions, slots, token_seq, tables, table_start, back to back.
    pub words: Vec<u32>,
    pub num_tokens: usize,
    pub num_seqs: usize,
    pub tables_len: usize,
    /// The largest position of any token.
    pub max_pos: usize,
}

impl Packed {
    fn range(&self, array: Array) -> std::ops::Range<usize> {
        let (t, s) = (self.num_tokens, self.num_seqs);
        let (start, len) = match array {
            Array::Positions => (0, t),
            Array::Slots => (t, t),
            Array::TokenSeq => (2 * t, t),
            Array::Tables => (3 * t, self.tables_len),
            Array::TableStart => (3 * t + self.tables_len, s),
        };
        start..start + len
    }
}

/// The arrays of a [`Packed`] batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Array {
    /// Each token's position (rotary angle, last key it attends to).
    Positions,
    /// Each token's KV slot.
    Slots,
    /// Each token's sequence index.
    TokenSeq,
    /// Every sequence's block table, concatenated.
    Tables,
    /// Where each sequence's table starts in `Tables`.
    TableStart,
}

/// Checks `batch` against a pool of `num_blocks` blocks of `block_size` and
/// packs it.
pub(crate) fn pack(
    batch: &FlatBatch,
    num_blocks: usize,
    block_size: usize,
) -> Result<Packed, CudaBackendError> {
    let invalid = |msg: String| Err(CudaBackendError::InvalidBatch(msg));
    let t = batch.num_tokens();
    if batch.positions.len() != t || batch.slot_mapping.len() != t {
        return invalid(format!(
            "{t} tokens, {} positions, {} slots",
            batch.positions.len(),
            batch.slot_mapping.len()
        ));
    }
    if batch.block_size != block_size {
        return invalid(format!(
            "batch built for blocks of {}, the pool's are {block_size}",
            batch.block_size
        ));
    }
    let num_slots = num_blocks * block_size;
    if let Some(s) = batch
        .slot_mapping
        .iter()
        .find(|&&s| s as usize >= num_slots)
    {
        return invalid(format!("KV slot {s} outside the pool of {num_slots}"));
    }
    let tables_len: usize = batch.seqs.iter().map(|s| s.block_table.len()).sum();
    let mut words = Vec::with_capacity(4 * t + tables_len + batch.seqs.len());
    words.extend_from_slice(&batch.positions);
    words.extend_from_slice(&batch.slot_mapping);
    let mut next = 0;
    for (i, seq) in batch.seqs.iter().enumerate() {
        if seq.query_start != next || seq.query_len == 0 || seq.query_len > seq.context_len {
            return invalid(format!(
                "sequence {i}: tokens {}..+{} of context {} after {next} tokens",
                seq.query_start, seq.query_len, seq.context_len
            ));
        }
        if seq.block_table.len() * block_size < seq.context_len {
            return invalid(format!(
                "sequence {i}: {} blocks cannot hold {} tokens",
                seq.block_table.len(),
                seq.context_len
            ));
        }
        if let Some(b) = seq.block_table.iter().find(|&&b| b as usize >= num_blocks) {
            return invalid(format!(
                "sequence {i}: block {b} is outside the pool of {num_blocks}"
            ));
        }
        let first = seq.context_len - seq.query_len;
        for j in 0..seq.query_len {
            if batch.positions.get(next + j) != Some(&((first + j) as u32)) {
                return invalid(format!(
                    "sequence {i}: token {j} is not at position {}",
                    first + j
                ));
            }
        }
        words.extend(std::iter::repeat_n(i as u32, seq.query_len));
        next += seq.query_len;
    }
    if next != t {
        return invalid(format!("the sequences hold {next} of the {t} tokens"));
    }
    let mut start = 0u32;
    let mut starts = Vec::with_capacity(batch.seqs.len());
    for seq in &batch.seqs {
        words.extend_from_slice(&seq.block_table);
        starts.push(start);
        start += seq.block_table.len() as u32;
    }
    words.extend(starts);
    Ok(Packed {
        words,
        num_tokens: t,
        num_seqs: batch.seqs.len(),
        tables_len,
        max_pos: batch.positions.iter().max().map_or(0, |&p| p as usize),
    })
}

/// A packed batch on the device, with what it was packed from.
pub(crate) struct DeviceBatch {
    batch: FlatBatch,
    pool: (usize, usize),
    packed: Packed,
    buf: CudaSlice<u32>,
}

impl DeviceBatch {
    /// One of its arrays.
    pub fn view(&self, array: Array) -> CudaView<'_, u32> {
        self.buf.slice(self.packed.range(array))
    }

    /// Its host-side description.
    pub fn packed(&self) -> &Packed {
        &self.packed
    }
}

/// The device copy of `batch` for a pool of `num_blocks` blocks of
/// `block_size`: the one in `slot` if it is that batch, else a new upload
/// (which replaces it).
pub(crate) fn device_batch<'a>(
    slot: &'a mut Option<DeviceBatch>,
    memory: &DeviceMemory,
    batch: &FlatBatch,
    num_blocks: usize,
    block_size: usize,
) -> Result<&'a DeviceBatch, CudaBackendError> {
    let fresh = slot
        .as_ref()
        .is_some_and(|d| d.pool == (num_blocks, block_size) && d.batch == *batch);
    if !fresh {
        let packed = pack(batch, num_blocks, block_size)?;
        let buf = memory.upload(&packed.words)?;
        *slot = Some(DeviceBatch {
            batch: batch.clone(),
            pool: (num_blocks, block_size),
            packed,
            buf,
        });
    }
    slot.as_ref()
        .ok_or_else(|| CudaBackendError::Shape("no batch uploaded".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_engine::{Batch, SequenceChunk};

    fn flat(chunks: &[(usize, usize, Vec<u32>)]) -> FlatBatch {
        let batch = Batch {
            chunks: chunks
                .iter()
                .map(|(len, start, table)| SequenceChunk {
                    token_ids: vec![1; *len],
                    start_position: *start,
                    block_table: table.clone(),
                    wants_logits: true,
                })
                .collect(),
        };
        FlatBatch::new(&batch, 4, 16, 1024).expect("valid")
    }

    #[test]
    fn packs_every_array_back_to_back() {
        // A 3-token prefill and a decode at position 5.
        let b = flat(&[(3, 0, vec![7]), (1, 5, vec![2, 9])]);
        let p = pack(&b, 16, 4).expect("packs");
        let get = |a| p.words[p.range(a)].to_vec();
        assert_eq!(get(Array::Positions), [0, 1, 2, 5]);
        assert_eq!(get(Array::Slots), [28, 29, 30, 37]);
        assert_eq!(get(Array::TokenSeq), [0, 0, 0, 1]);
        assert_eq!(get(Array::Tables), [7, 2, 9]);
        assert_eq!(get(Array::TableStart), [0, 1]);
        assert_eq!(p.words.len(), 4 * 3 + 3 + 2);
        assert_eq!(p.max_pos, 5);
    }

    #[test]
    fn batches_that_would_read_outside_the_pool_are_refused() {
        let good = flat(&[(2, 0, vec![3])]);
        // Block 3 is outside a pool of 2 blocks; so are its slots.
        let msg = pack(&good, 2, 4).unwrap_err().to_string();
        assert!(msg.contains("outside the pool"), "{msg}");
        let mut short = good.clone();
        short.seqs[0].context_len = 5; // one block of 4 cannot hold 5 tokens
        short.seqs[0].query_len = 2;
        assert!(pack(&short, 16, 4).is_err());
        let mut moved = good.clone();
        moved.positions[1] = 7;
        let msg = pack(&moved, 16, 4).unwrap_err().to_string();
        assert!(msg.contains("not at position"), "{msg}");
        assert!(pack(&good, 16, 8).is_err(), "block size differs");
    }
}
