//! The 4-bit layout of the Q4_0, Q4_K and Q6_K repacks: 32 values of each of the four rows of a group in 64 bytes, such
//! that one 32-byte load unpacks into eight consecutive values of each row.
//!
//! Byte `(j / 2) * 32 + 8 * lane + i` holds value `8 * j + i` of the lane's
//! row, in its low nibble for even `j` and its high nibble for odd `j`. After
//! unpacking, vector `j` holds values `8j..8j + 8` of row 0, then row 1, ...:
//! a broadcast of eight activation bytes multiplies all four rows at once.

use super::{GROUP, QK};

/// Bytes of one 32-value chunk of a group.
pub(super) const CHUNK_BYTES: usize = GROUP * QK / 2;

/// Byte index and bit shift of value `t` (0..32) of lane `lane`.
fn position(lane: usize, t: usize) -> (usize, u32) {
    let (j, i) = (t / 8, t % 8);
    ((j / 2) * 32 + 8 * lane + i, 4 * (j % 2) as u32)
}

/// Stores the low four bits of `v` as value `t` of lane `lane` (the nibble
/// must still be zero).
pub(super) fn set(chunk: &mut [u8; CHUNK_BYTES], lane: usize, t: usize, v: u8) {
    let (at, shift) = position(lane, t);
    chunk[at] |= (v & 0x0F) << shift;
}

/// Value `t` of lane `lane`, 0..16.
pub(super) fn get(chunk: &[u8; CHUNK_BYTES], lane: usize, t: usize) -> u8 {
    let (at, shift) = position(lane, t);
    (chunk[at] >> shift) & 0x0F
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    use super::CHUNK_BYTES;

    /// The four vectors of a chunk, as unsigned bytes 0..16.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub fn unpack(chunk: &[u8; CHUNK_BYTES]) -> [__m256i; 4] {
        let low_nibbles = _mm256_set1_epi8(0x0F);
        let p = chunk.as_ptr().cast::<__m256i>();
        // SAFETY: the chunk is 64 bytes; unaligned loads.
        let (a, b) = unsafe { (_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1))) };
        [
            _mm256_and_si256(a, low_nibbles),
            _mm256_and_si256(_mm256_srli_epi16::<4>(a), low_nibbles),
            _mm256_and_si256(b, low_nibbles),
            _mm256_and_si256(_mm256_srli_epi16::<4>(b), low_nibbles),
        ]
    }

    /// The four vectors to multiply a chunk's with: activation values
    /// `8j..8j + 8` of `qs` in every 64-bit lane of vector `j`.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub fn broadcast(qs: &[i8; 32]) -> [__m256i; 4] {
        let p = qs.as_ptr().cast::<i64>();
        // SAFETY: bytes 8j..8j + 8 for j < 4 lie in the 32; unaligned reads.
        let v = unsafe { [0, 1, 2, 3].map(|j| p.add(j).read_unaligned()) };
        [
            _mm256_set1_epi64x(v[0]),
            _mm256_set1_epi64x(v[1]),
            _mm256_set1_epi64x(v[2]),
            _mm256_set1_epi64x(v[3]),
        ]
    }
}

const _: () = assert!(CHUNK_BYTES == 64);
