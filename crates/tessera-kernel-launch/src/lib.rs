//! Launch configurations of the kernels in `kernels/`: grid, block, dynamic
//! shared memory and the kernels' launch-shaped arguments (split-K
//! partitions).
//!
//! One source for two callers: the CUDA backend (`tessera-model`'s
//! `backend/cuda`) launches exactly these configurations, and the CPU
//! emulation tests (`tessera-kernel-emu`) run the same kernels with them, so
//! what the emulator verifies is the launch the backend makes. The crate has
//! no heavy dependency on purpose: the emulation tests link it without the
//! model crate.

use thiserror::Error;

/// Threads per block of the row kernels (a multiple of 32: the reductions
/// use whole warps).
pub const ROW_THREADS: u32 = 256;
/// Warps per block of `head_rms_norm_bf16`: one warp per (row, head).
pub const HEAD_NORM_WARPS: u32 = 4;
/// Threads of a rotary block (one block per token).
pub const ROTARY_THREADS: u32 = 256;
/// Threads of an attention block (`ATT_THREADS` in `attention.cu`).
pub const ATTENTION_THREADS: u32 = 128;
/// Threads of a combine block (a multiple of 32; they stride over D).
pub const COMBINE_THREADS: u32 = 128;
/// Keys per split-K partition: a multiple of the kernel's 64-key tile
/// (`ATT_TILE`). A constant, so a token's partitions depend only on its own
/// position and its result never depends on the batch.
pub const PARTITION: usize = 512;
/// Query heads one attention block computes (`ATT_MAX_GROUP`): the GQA
/// group's limit.
pub const MAX_GROUP: usize = 16;
/// Head sizes with an attention kernel.
pub const HEAD_DIMS: [usize; 4] = [64, 80, 96, 128];
/// Largest grid extent in y and z.
const MAX_GRID_YZ: usize = 65_535;

/// A launch configuration: what `cuLaunchKernel` takes besides the arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// Blocks in x, y, z.
    pub grid: (u32, u32, u32),
    /// Threads per block in x, y, z.
    pub block: (u32, u32, u32),
    /// Dynamic shared memory per block, in bytes.
    pub shared_mem_bytes: u32,
}

/// A size that no launch (or no kernel's 32-bit argument) can express.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{what} = {value} is too large for the CUDA kernels (32-bit sizes, grid y/z <= 65535)")]
pub struct TooLarge {
    /// What the size counts.
    pub what: &'static str,
    /// The size.
    pub value: usize,
}

fn dim(what: &'static str, value: usize) -> Result<u32, TooLarge> {
    u32::try_from(value).map_err(|_| TooLarge { what, value })
}

fn dim_yz(what: &'static str, value: usize) -> Result<u32, TooLarge> {
    if value > MAX_GRID_YZ {
        return Err(TooLarge { what, value });
    }
    dim(what, value)
}

impl Launch {
    /// One block of `threads` per row: embedding gather, row gather, RMSNorm
    /// alone and after the residual add.
    pub fn rows(rows: usize) -> Result<Self, TooLarge> {
        Ok(Self {
            grid: (dim("rows", rows)?, 1, 1),
            block: (ROW_THREADS, 1, 1),
            shared_mem_bytes: 0,
        })
    }

    /// `head_rms_norm_bf16`: rows in x, groups of [`HEAD_NORM_WARPS`] heads in y.
    pub fn head_rms_norm(rows: usize, num_heads: usize) -> Result<Self, TooLarge> {
        let groups = num_heads.div_ceil(HEAD_NORM_WARPS as usize);
        Ok(Self {
            grid: (dim("rows", rows)?, dim_yz("head groups", groups)?, 1),
            block: (32 * HEAD_NORM_WARPS, 1, 1),
            shared_mem_bytes: 0,
        })
    }

    /// `silu_mul_bf16`, `gelu_tanh_mul_bf16`, `scale_f32`, `softcap_f32`:
    /// rows in x, `inter` columns in y by blocks of [`ROW_THREADS`].
    pub fn silu_mul(rows: usize, inter: usize) -> Result<Self, TooLarge> {
        let blocks = inter.div_ceil(ROW_THREADS as usize);
        Ok(Self {
            grid: (dim("rows", rows)?, dim_yz("column blocks", blocks)?, 1),
            block: (ROW_THREADS, 1, 1),
            shared_mem_bytes: 0,
        })
    }

    /// `rotary_cache_write_bf16`: one block per token.
    pub fn rotary(tokens: usize) -> Result<Self, TooLarge> {
        Ok(Self {
            grid: (dim("tokens", tokens)?, 1, 1),
            block: (ROTARY_THREADS, 1, 1),
            shared_mem_bytes: 0,
        })
    }

    /// `paged_attention_d*`: one block per (token, KV head, partition).
    pub fn attention(tokens: usize, num_kv_heads: usize, splits: usize) -> Result<Self, TooLarge> {
        Ok(Self {
            grid: (
                dim("tokens", tokens)?,
                dim_yz("KV heads", num_kv_heads)?,
                dim_yz("splits", splits)?,
            ),
            block: (ATTENTION_THREADS, 1, 1),
            shared_mem_bytes: 0,
        })
    }

    /// `paged_attention_combine`: one block per (token, query head).
    pub fn attention_combine(tokens: usize, num_heads: usize) -> Result<Self, TooLarge> {
        Ok(Self {
            grid: (dim("tokens", tokens)?, dim_yz("heads", num_heads)?, 1),
            block: (COMBINE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        })
    }
}

/// Split-K partitions of the token with the most keys: `max_pos + 1` keys,
/// or the sliding window's. At least one. The partials' buffer is
/// `[tokens, heads, splits, D]`.
pub fn attention_splits(max_pos: usize, sliding_window: Option<usize>) -> usize {
    let keys = match sliding_window {
        Some(w) if w > 0 => (max_pos + 1).min(w),
        _ => max_pos + 1,
    };
    keys.div_ceil(PARTITION).max(1)
}

/// The attention kernel for head size `d`, if there is one.
pub fn attention_kernel(d: usize) -> Option<&'static str> {
    match d {
        64 => Some("paged_attention_d64"),
        80 => Some("paged_attention_d80"),
        96 => Some("paged_attention_d96"),
        128 => Some("paged_attention_d128"),
        _ => None,
    }
}

/// Threads per block `kernel` is launched with, for the resource checks
/// (registers and shared memory per block decide how many blocks fit).
pub fn block_threads(kernel: &str) -> Option<u32> {
    match kernel {
        "embedding_gather_bf16"
        | "gather_rows_bf16"
        | "rms_norm_f32_bf16"
        | "add_rms_norm_f32_bf16"
        | "add_normed_rms_norm_f32_bf16"
        | "silu_mul_bf16"
        | "gelu_tanh_mul_bf16"
        | "scale_f32"
        | "softcap_f32" => Some(ROW_THREADS),
        "head_rms_norm_bf16" => Some(32 * HEAD_NORM_WARPS),
        "rotary_cache_write_bf16" => Some(ROTARY_THREADS),
        "paged_attention_combine" => Some(COMBINE_THREADS),
        k if k.starts_with("paged_attention_d") => Some(ATTENTION_THREADS),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_follow_the_longest_context_or_window() {
        assert_eq!(attention_splits(0, None), 1);
        assert_eq!(attention_splits(PARTITION - 1, None), 1);
        assert_eq!(attention_splits(PARTITION, None), 2);
        assert_eq!(attention_splits(10 * PARTITION, Some(PARTITION)), 1);
        assert_eq!(attention_splits(10 * PARTITION, Some(0)), 11);
    }

    #[test]
    fn grids_cover_their_work_and_refuse_what_does_not_fit() {
        let l = Launch::silu_mul(3, 2 * ROW_THREADS as usize + 1).unwrap();
        assert_eq!((l.grid, l.block.0), ((3, 3, 1), ROW_THREADS));
        let l = Launch::head_rms_norm(2, 5).unwrap();
        assert_eq!((l.grid, l.block.0), ((2, 2, 1), 128));
        assert_eq!(Launch::attention(4, 2, 3).unwrap().grid, (4, 2, 3));
        let err = Launch::attention(1, 1, 70_000).unwrap_err();
        assert_eq!(err.what, "splits");
        assert!(Launch::rows(usize::MAX).is_err());
    }

    #[test]
    fn every_head_size_has_a_kernel_and_no_other_does() {
        for d in HEAD_DIMS {
            assert_eq!(
                attention_kernel(d),
                Some(format!("paged_attention_d{d}")).as_deref()
            );
        }
        assert_eq!(attention_kernel(72), None);
    }
}
