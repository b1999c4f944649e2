//! One model's engine settings: [`EngineArgs`], the flags every generating
//! command takes, and [`EngineOptions`], what one model runs with (the flags,
//! or a model's `model.toml` over them).

use anyhow::Result;
use tessera_manager::ModelOptions;
use tessera_model::backend::KvCacheDtype;
use tessera_model::device::DeviceSpec;

use crate::engine_setup::Compute;
pub use tessera_manager::units::parse_bytes;

/// Model and engine options common to the generating commands. Each can
/// also be set by its `TESSERA_*` environment variable (a flag wins).
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// GGUF file, Hugging Face model directory or hub repo id [default: the
    /// default model under models/].
    #[arg(long, env = "TESSERA_MODEL")]
    pub model: Option<String>,
    /// Longest sequence (prompt plus output) [default: the model's trained
    /// context].
    #[arg(long, env = "TESSERA_MAX_MODEL_LEN")]
    pub max_model_len: Option<usize>,
    /// Memory for the KV cache, e.g. `512MiB`, `2GiB` [default: a quarter of
    /// the memory budget, at most what max-num-seqs full-length sequences
    /// need; on a GPU, what the budget leaves after the weights].
    #[arg(long, env = "TESSERA_KV_CACHE_MEMORY", value_parser = parse_bytes)]
    pub kv_cache_memory: Option<u64>,
    /// How K and V are stored: f16 (half the memory and the attention's
    /// memory traffic, each value rounded to 11 bits) or f32 (exact).
    #[arg(long, env = "TESSERA_KV_CACHE_DTYPE", default_value_t = KvCacheDtype::F16)]
    pub kv_cache_dtype: KvCacheDtype,
    /// Most new tokens computed per step.
    #[arg(long, env = "TESSERA_MAX_NUM_BATCHED_TOKENS", default_value_t = 512)]
    pub max_num_batched_tokens: usize,
    /// Most sequences running at once.
    #[arg(long, env = "TESSERA_MAX_NUM_SEQS", default_value_t = 64)]
    pub max_num_seqs: usize,
    /// Most batch-priority sequences (batch jobs, `service_tier: "flex"`)
    /// running at once; the other slots stay free for interactive requests,
    /// which also preempt running batch work [default: half of
    /// max-num-seqs, at least 1].
    #[arg(long, env = "TESSERA_BATCH_MAX_RUNNING", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_max_running: Option<u64>,
    /// Most batch-priority prompt tokens computed in one step. A step cannot
    /// be interrupted, so this bounds how long an interactive prompt that
    /// arrives meanwhile waits behind batch prompts [default: 32 on the CPU,
    /// where a step's time grows with each token; max-num-batched-tokens on
    /// a GPU].
    #[arg(long, env = "TESSERA_BATCH_MAX_PREFILL_TOKENS", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_max_prefill_tokens: Option<u64>,
    /// Let batch work share the steps that compute an interactive prompt
    /// [default: off: such a step carries interactive work only, unless the
    /// step before it held batch work out too].
    #[arg(long, env = "TESSERA_BATCH_WITH_INTERACTIVE_PREFILL", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    pub batch_with_interactive_prefill: bool,
    /// Turn off reuse of cached prompt prefixes [default: off].
    #[arg(long, env = "TESSERA_NO_PREFIX_CACHING", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    pub no_prefix_caching: bool,
    /// Most requests queued for admission; beyond it requests are refused
    /// (HTTP 429) instead of waiting.
    #[arg(long, env = "TESSERA_MAX_WAITING_REQUESTS", default_value_t = 4096)]
    pub max_waiting_requests: usize,
    /// Threads for the model's math [default: one per core]; the engine and
    /// HTTP threads mostly wait on them.
    #[arg(long, env = "TESSERA_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Where the model runs: cpu; cuda or cuda:N (a build with `--features
    /// cuda`); auto (CUDA if the driver, its libraries and a GPU are found,
    /// else the CPU).
    #[arg(long, env = "TESSERA_DEVICE", default_value_t = DeviceSpec::Cpu)]
    pub device: DeviceSpec,
    /// On a GPU: the share of its memory tessera may use in all (weights,
    /// activations, KV caches of every loaded model): the memory budget.
    #[arg(long, env = "TESSERA_GPU_MEMORY_UTILIZATION", default_value_t = 0.9, value_parser = parse_fraction)]
    pub gpu_memory_utilization: f64,
    /// On the CPU: bytes every loaded model's weights and KV cache share,
    /// e.g. `8GiB` [default: 90% of the memory available at start-up].
    #[arg(long, env = "TESSERA_MEMORY_BUDGET", value_parser = parse_bytes)]
    pub memory_budget: Option<u64>,
}

impl EngineArgs {
    /// The per-model options these flags give.
    pub fn options(&self) -> EngineOptions {
        EngineOptions {
            max_model_len: self.max_model_len,
            kv_cache: self
                .kv_cache_memory
                .map_or(KvCacheSize::Auto, KvCacheSize::Bytes),
            kv_cache_dtype: self.kv_cache_dtype,
            max_num_batched_tokens: self.max_num_batched_tokens,
            max_num_seqs: self.max_num_seqs,
            batch_max_running: self
                .batch_max_running
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            batch_max_prefill_tokens: self
                .batch_max_prefill_tokens
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            batch_with_interactive_prefill: self.batch_with_interactive_prefill,
            no_prefix_caching: self.no_prefix_caching,
            max_waiting_requests: self.max_waiting_requests,
        }
    }

    /// Opens the device and sizes the compute pool these flags ask for.
    pub fn open_compute(&self) -> Result<Compute> {
        Compute::open(
            self.device,
            self.threads,
            self.kv_cache_dtype,
            self.gpu_memory_utilization,
        )
    }

    /// The memory budget: `--memory-budget`, or the device's default.
    pub fn memory_budget(&self, compute: &Compute) -> Result<u64> {
        match self.memory_budget {
            Some(bytes) => Ok(bytes),
            None => compute.default_budget(),
        }
    }
}

/// A share in (0, 1].
fn parse_fraction(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(format!("{v} is not in (0, 1]"))
    }
}

/// How big one model's KV cache is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvCacheSize {
    /// The default (see `--kv-cache-memory`).
    Auto,
    /// This many bytes (`--kv-cache-memory`).
    Bytes(u64),
    /// Exactly this many blocks of 16 tokens (tests and benches).
    Blocks(usize),
}

/// One model's engine settings: the flags, or a model's `model.toml` over them.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineOptions {
    /// Serving cap on a sequence's length (none: the trained context).
    pub max_model_len: Option<usize>,
    /// The KV cache's size.
    pub kv_cache: KvCacheSize,
    /// How K and V are stored.
    pub kv_cache_dtype: KvCacheDtype,
    /// Most new tokens per step.
    pub max_num_batched_tokens: usize,
    /// Most sequences running at once.
    pub max_num_seqs: usize,
    /// Most batch-priority sequences running at once (`None`: half of
    /// `max_num_seqs`).
    pub batch_max_running: Option<usize>,
    /// Most batch-priority prompt tokens per step (`None`: 32 on the CPU,
    /// `max_num_batched_tokens` on a GPU).
    pub batch_max_prefill_tokens: Option<usize>,
    /// Let batch work share the steps that compute an interactive prompt.
    pub batch_with_interactive_prefill: bool,
    /// Do not reuse cached prompt prefixes.
    pub no_prefix_caching: bool,
    /// Most requests waiting for admission.
    pub max_waiting_requests: usize,
}

/// The keys a model's settings may give, named as the flags.
pub const MODEL_OPTION_KEYS: &[&str] = &[
    "max-model-len",
    "kv-cache-memory",
    "kv-cache-dtype",
    "max-num-batched-tokens",
    "max-num-seqs",
    "no-prefix-caching",
    "max-waiting-requests",
];

impl EngineOptions {
    /// These options with a model's settings (`model.toml`, a `[[models]]`
    /// table) over them; an unknown key or a bad value is an error naming it.
    pub fn with_settings(&self, settings: &ModelOptions) -> Result<Self, String> {
        let mut o = self.clone();
        for (key, value) in settings {
            let bad = |want: &str| format!("'{key}' must be {want}, got {value}");
            let number = || {
                value
                    .as_integer()
                    .and_then(|v| usize::try_from(v).ok())
                    .ok_or_else(|| bad("a non-negative integer"))
            };
            let count = || match number()? {
                0 => Err(bad("a positive integer")),
                n => Ok(n),
            };
            match key.as_str() {
                "max-model-len" => o.max_model_len = Some(count()?),
                "kv-cache-memory" => {
                    let bytes = match value {
                        toml::Value::String(s) => {
                            parse_bytes(s).map_err(|e| format!("'{key}': {e}"))?
                        }
                        toml::Value::Integer(n) => u64::try_from(*n).map_err(|_| bad("a size"))?,
                        _ => return Err(bad("a size like \"512MiB\"")),
                    };
                    o.kv_cache = KvCacheSize::Bytes(bytes);
                }
                "kv-cache-dtype" => {
                    o.kv_cache_dtype = value
                        .as_str()
                        .ok_or_else(|| bad("\"f16\" or \"f32\""))?
                        .parse()
                        .map_err(|e| format!("'{key}': {e}"))?;
                }
                "max-num-batched-tokens" => o.max_num_batched_tokens = count()?,
                "max-num-seqs" => o.max_num_seqs = count()?,
                // 0 is allowed, as for the flag: every request is refused (429).
                "max-waiting-requests" => o.max_waiting_requests = number()?,
                "no-prefix-caching" => {
                    o.no_prefix_caching = value.as_bool().ok_or_else(|| bad("true or false"))?;
                }
                other => {
                    return Err(format!(
                        "unknown model option '{other}' (the options are: {})",
                        MODEL_OPTION_KEYS.join(", ")
                    ))
                }
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> EngineOptions {
        EngineOptions {
            max_model_len: None,
            kv_cache: KvCacheSize::Auto,
            kv_cache_dtype: KvCacheDtype::F16,
            max_num_batched_tokens: 512,
            max_num_seqs: 64,
            batch_max_running: None,
            batch_max_prefill_tokens: None,
            batch_with_interactive_prefill: false,
            no_prefix_caching: false,
            max_waiting_requests: 4096,
        }
    }

    #[test]
    fn model_settings_override_the_flags_by_their_names() {
        let settings: ModelOptions = toml::from_str(
            "max-model-len = 2048\nkv-cache-memory = \"256MiB\"\nkv-cache-dtype = \"f32\"\n\
             max-num-seqs = 8\nno-prefix-caching = true\nmax-num-batched-tokens = 128\n\
             max-waiting-requests = 10",
        )
        .expect("toml");
        let o = base().with_settings(&settings).expect("valid");
        assert_eq!(o.max_model_len, Some(2048));
        assert_eq!(o.kv_cache, KvCacheSize::Bytes(256 << 20));
        assert_eq!(o.kv_cache_dtype, KvCacheDtype::F32);
        assert_eq!(
            (
                o.max_num_seqs,
                o.max_num_batched_tokens,
                o.max_waiting_requests
            ),
            (8, 128, 10)
        );
        assert!(o.no_prefix_caching);
        for (bad, says) in [
            ("max-num-seqs = 0", "positive integer"),
            ("max-num-seqs = \"8\"", "non-negative integer"),
            ("max-waiting-requests = -1", "non-negative integer"),
            ("kv-cache-memory = \"lots\"", "kv-cache-memory"),
            ("kv-cache-dtype = \"f8\"", "kv-cache-dtype"),
            ("no-prefix-caching = 1", "true or false"),
            ("max_model_len = 5", "unknown model option 'max_model_len'"),
        ] {
            let t: ModelOptions = toml::from_str(bad).expect("toml");
            let e = base().with_settings(&t).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
