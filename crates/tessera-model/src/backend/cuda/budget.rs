//! How much device memory the KV cache gets.
//!
//! `--gpu-memory-utilization` (vLLM's option, default 0.9) is the share of the
//! device's memory tessera may use in all. The KV pool gets that share less
//! what is already in use when it is sized, which is measured (the CUDA
//! context, the weights, the kernels, the cuBLASLt workspace: `total - free`
//! from `cuMemGetInfo` after loading), and less what one forward's activations
//! will need, which is estimated from the model's shapes and the batch limits
//! ([`activation_bytes`]). Memory other processes use counts as in use.
//!
//! Everything here is host arithmetic, tested without a GPU.

use crate::config::ModelConfig;

use super::attention::PARTITION;

/// Device memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuMemory {
    /// Free now.
    pub free: u64,
    /// The device's total.
    pub total: u64,
}

/// The most a single forward computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardLimits {
    /// New tokens per step (`--max-num-batched-tokens`).
    pub max_tokens: usize,
    /// Rows of logits per step: one per running sequence (`--max-num-seqs`).
    pub max_logit_rows: usize,
    /// Longest sequence (keys a token attends to).
    pub max_model_len: usize,
}

/// Why no KV pool can be sized.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BudgetError {
    /// The utilization is not in (0, 1].
    #[error("--gpu-memory-utilization {0}: must be more than 0 and at most 1")]
    Utilization(f64),
    /// Weights and activations already take the whole share.
    #[error(
        "no GPU memory left for the KV cache: --gpu-memory-utilization {utilization} allows \
         {allowed_mib} MiB of the device's {total_mib} MiB, {used_mib} MiB are in use after \
         loading (weights, CUDA context, other processes) and a forward's activations need \
         about {activations_mib} MiB; raise the utilization, lower --max-num-batched-tokens \
         or --max-model-len, or use a smaller model"
    )]
    NoRoom {
        utilization: f64,
        allowed_mib: u64,
        total_mib: u64,
        used_mib: u64,
        activations_mib: u64,
    },
}

const MIB: u64 = 1 << 20;

/// Bytes for the KV pool: `utilization * total - (total - free) - activations`.
pub fn kv_cache_budget(
    memory: GpuMemory,
    utilization: f64,
    activations: u64,
) -> Result<u64, BudgetError> {
    if !(utilization > 0.0 && utilization <= 1.0) {
        return Err(BudgetError::Utilization(utilization));
    }
    // f64 holds byte counts of any real device exactly enough (2^53 bytes).
    let allowed = (memory.total as f64 * utilization) as u64;
    let used = memory.total.saturating_sub(memory.free);
    match allowed
        .checked_sub(used)
        .and_then(|rest| rest.checked_sub(activations))
    {
        Some(budget) if budget > 0 => Ok(budget),
        _ => Err(BudgetError::NoRoom {
            utilization,
            allowed_mib: allowed / MIB,
            total_mib: memory.total / MIB,
            used_mib: used / MIB,
            activations_mib: activations.div_ceil(MIB),
        }),
    }
}

/// A bound on the device memory one forward's intermediate tensors take at
/// `limits`: the sum of every tensor a layer allocates (most are freed before
/// the next is made, so this over-counts), with the split-K attention
/// partials sized for the longest context, a quarter more for the pool's
/// rounding, and 64 MiB to spare.
pub fn activation_bytes(c: &ModelConfig, limits: &ForwardLimits) -> u64 {
    let t = limits.max_tokens as u64;
    let rows = limits.max_logit_rows as u64;
    let hidden = c.hidden_size as u64;
    let inter = c.intermediate_size as u64;
    let heads = c.num_heads as u64;
    let head_dim = c.head_dim as u64;
    let q = heads * head_dim;
    let kv = c.num_kv_heads as u64 * head_dim;
    let splits = limits.max_model_len.div_ceil(PARTITION).max(1) as u64;
    let per_token = hidden * 4          // residual (f32)
        + hidden * 2                    // normed input (bf16)
        + (q + 2 * kv) * 2              // Q|K|V
        + heads * splits * (head_dim + 2) * 4 // attention partials and their max/sum
        + q * 2                         // attention output
        + hidden * 2                    // output projection
        + 2 * inter * 2                 // gate|up
        + inter * 2                     // SiLU·mul
        + hidden * 2                    // down projection
        + 4 * 4; // ids, positions, slots, sequence of each token
    let per_row = hidden * 2 + c.vocab_size as u64 * 4; // gathered rows, f32 logits
    let sum = t * per_token + rows * per_row;
    sum + sum / 4 + 64 * MIB
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn the_budget_is_the_share_less_what_is_used() {
        let memory = GpuMemory {
            free: 70 * GIB,
            total: 80 * GIB,
        };
        // 72 GiB allowed, 10 in use, 2 for activations: 60 left.
        assert_eq!(kv_cache_budget(memory, 0.9, 2 * GIB), Ok(60 * GIB));
        assert_eq!(kv_cache_budget(memory, 1.0, 0), Ok(70 * GIB));
    }

    #[test]
    fn no_room_and_bad_utilizations_are_errors_that_say_so() {
        let memory = GpuMemory {
            free: 8 * GIB,
            total: 80 * GIB,
        };
        let msg = kv_cache_budget(memory, 0.9, GIB).unwrap_err().to_string();
        assert!(msg.contains("no GPU memory left"), "{msg}");
        assert!(msg.contains("73728 MiB are in use"), "{msg}");
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            let msg = kv_cache_budget(memory, bad, 0).unwrap_err().to_string();
            assert!(msg.contains("--gpu-memory-utilization"), "{msg}");
        }
    }

    fn config() -> ModelConfig {
        let json = r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 4096,
            "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 8, "vocab_size": 128256, "rms_norm_eps": 1e-5,
            "max_position_embeddings": 8192}"#;
        ModelConfig::from_hf_json(std::path::Path::new("config.json"), json).expect("config")
    }

    #[test]
    fn activations_grow_with_every_limit() {
        let c = config();
        let base = ForwardLimits {
            max_tokens: 512,
            max_logit_rows: 64,
            max_model_len: 8192,
        };
        let a = activation_bytes(&c, &base);
        // Llama-3-8B shapes at 512 tokens: a few hundred MiB, not GiBs.
        assert!(a > 100 * MIB && a < 2 * GIB, "{}", a / MIB);
        for more in [
            ForwardLimits {
                max_tokens: 1024,
                ..base
            },
            ForwardLimits {
                max_logit_rows: 128,
                ..base
            },
            ForwardLimits {
                max_model_len: 16384,
                ..base
            },
        ] {
            assert!(activation_bytes(&c, &more) > a);
        }
    }
}
