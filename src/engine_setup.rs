//! Loading a model and starting the engine on it: shared by every command that
//! generates.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tessera_engine::engine::{spawn, EngineConfig, EngineHandle};
use tessera_model::backend::cpu::CpuBackend;
use tessera_model::backend::{Backend, KvCacheDtype};
use tessera_model::chat::ChatTemplate;
use tessera_model::config::ModelConfig;
use tessera_model::device::{self, Device, DeviceSpec};
use tessera_model::loader::{load_bundle, ModelSource};
use tessera_model::runner::{CacheConfig, ModelRunner};
use tessera_model::tokenizer::Tokenizer;

use crate::model_path;
pub use crate::units::parse_bytes;

/// Tokens per KV block.
const BLOCK_SIZE: usize = 16;

/// Model and engine options common to the generating commands. Each can
/// also be set by its `TESSERA_*` environment variable (a flag wins).
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// GGUF file, Hugging Face model directory or hub repo id [default: the
    /// default model under models/].
    #[arg(long, env = "TESSERA_MODEL")]
    pub model: Option<String>,
    /// Longest sequence (prompt plus output) [default: the model's context].
    #[arg(long, env = "TESSERA_MAX_MODEL_LEN")]
    pub max_model_len: Option<usize>,
    /// Memory for the KV cache, e.g. `512MiB`, `2GiB` [default: a quarter of the
    /// available memory, at most what max-num-seqs full-length sequences need].
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
    /// activations, KV cache); the KV cache gets what the rest leaves, unless
    /// --kv-cache-memory sets it.
    #[arg(long, env = "TESSERA_GPU_MEMORY_UTILIZATION", default_value_t = 0.9, value_parser = parse_fraction)]
    pub gpu_memory_utilization: f64,
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

/// Sizes the process's compute pool, which every CPU kernel runs on.
fn size_thread_pool(threads: usize) -> Result<()> {
    // Fails only when the pool already exists (an earlier engine in this
    // process); then it must already have the size asked for.
    let built = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("tessera-compute-{i}"))
        .build_global();
    if built.is_err() && rayon::current_num_threads() != threads {
        bail!(
            "--threads {threads}: this process's compute pool already runs {} threads",
            rayon::current_num_threads()
        );
    }
    Ok(())
}

/// A running engine and what the front end needs beside it.
pub struct Serving {
    pub engine: EngineHandle,
    pub tokenizer: Arc<Tokenizer>,
    pub chat_template: Option<ChatTemplate>,
    /// The model file or directory loaded.
    pub model_path: PathBuf,
    /// The compute backend, for logs.
    pub backend: &'static str,
    /// Tokens the KV pool holds.
    pub kv_tokens: usize,
}

/// Loads the model and starts the engine, reporting the KV pool on stderr.
pub fn start(args: &EngineArgs) -> Result<Serving> {
    let chosen = choose_device(args)?;
    let path = model_path::resolve(args.model.as_deref())?;
    let source = ModelSource::detect(&path)?;
    if let Some(threads) = args.threads {
        size_thread_pool(usize::from(threads))?;
    }
    match chosen {
        Chosen::Cpu => start_on(
            CpuBackend::new(),
            args,
            path,
            &source,
            |_, config, per_token| {
                Ok(match args.kv_cache_memory {
                    Some(bytes) => bytes,
                    None => default_kv_budget(
                        per_token,
                        config.max_position_embeddings,
                        args.max_num_seqs,
                    ),
                })
            },
        ),
        #[cfg(feature = "cuda")]
        Chosen::Cuda(backend) => cuda::start(*backend, args, path, &source),
    }
}

/// [`start`] on a chosen backend; `budget` gives the KV pool's bytes from
/// the backend (its free memory), the loaded model's configuration and the
/// bytes one token's K and V take.
fn start_on<B: Backend + 'static>(
    backend: B,
    args: &EngineArgs,
    path: PathBuf,
    source: &ModelSource,
    budget: impl FnOnce(&B, &ModelConfig, u64) -> Result<u64>,
) -> Result<Serving> {
    let load_start = Instant::now();
    let bundle = load_bundle(&backend, source, args.max_model_len)
        .with_context(|| format!("loading {}", path.display()))?;
    let config = bundle.model.config.clone();
    let max_len = config.max_position_embeddings;
    let per_token = kv_bytes_per_token(&config, args.kv_cache_dtype);
    let budget = budget(&backend, &config, per_token)?;
    let num_blocks =
        usize::try_from(budget / (per_token * BLOCK_SIZE as u64)).unwrap_or(usize::MAX);
    if num_blocks == 0 {
        bail!(
            "--kv-cache-memory {budget} bytes is less than one block of {BLOCK_SIZE} tokens ({} bytes)",
            per_token * BLOCK_SIZE as u64
        );
    }
    let name = backend.name();
    let runner = ModelRunner::new(
        backend,
        bundle.model,
        CacheConfig {
            block_size: BLOCK_SIZE,
            num_blocks,
            max_model_len: max_len,
            kv_dtype: args.kv_cache_dtype,
        },
    )?;
    let tokenizer = Arc::new(bundle.tokenizer);
    let on_cpu = name == "cpu";
    eprintln!(
        "tessera: loaded {} in {:.2}s; KV cache {num_blocks} blocks x {BLOCK_SIZE} = {} tokens ({:.1} MiB, {}); context {max_len}; {}",
        path.display(),
        load_start.elapsed().as_secs_f64(),
        num_blocks * BLOCK_SIZE,
        (num_blocks * BLOCK_SIZE) as f64 * per_token as f64 / (1024.0 * 1024.0),
        if on_cpu { args.kv_cache_dtype.to_string() } else { "bf16".to_string() },
        if on_cpu {
            format!("{} compute threads", rayon::current_num_threads())
        } else {
            format!("on {name}")
        },
    );
    let engine = spawn(
        runner,
        tokenizer.clone(),
        EngineConfig {
            max_num_batched_tokens: args.max_num_batched_tokens,
            max_num_seqs: args.max_num_seqs,
            enable_prefix_caching: !args.no_prefix_caching,
            max_waiting_requests: args.max_waiting_requests,
            eos_token_ids: tokenizer.eos_token_ids().to_vec(),
            vocab_size: config.vocab_size.min(tokenizer.vocab_size().max(1)).max(1),
        },
    )?;
    Ok(Serving {
        engine,
        tokenizer,
        chat_template: bundle.chat_template,
        model_path: path,
        backend: if on_cpu { "cpu" } else { "cuda" },
        kv_tokens: num_blocks * BLOCK_SIZE,
    })
}

/// The device the model will run on, ready before anything is loaded.
enum Chosen {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda(Box<tessera_model::backend::cuda::CudaBackend>),
}

/// Resolves `--device` before anything is loaded, so a device that cannot be
/// used fails start-up at once: a CUDA device is opened and its backend set
/// up (every kernel compiled or read from the PTX cache, cuBLASLt). Under
/// `auto`, a device that opens but cannot be set up is passed over for the
/// CPU, with the reason.
fn choose_device(args: &EngineArgs) -> Result<Chosen> {
    let spec = args.device;
    let selection = device::select(spec)?;
    match selection.device {
        Device::Cpu => {
            if spec != DeviceSpec::Cpu {
                eprintln!("tessera: device {}", selection.reason);
            }
            Ok(Chosen::Cpu)
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(dev) => cuda::choose(spec, args, dev, &selection.reason),
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    //! The CUDA side of start-up: the backend built on the opened device, and
    //! the KV pool sized from the GPU's free memory.

    use super::*;
    use tessera_model::backend::cuda::{
        activation_bytes, kv_cache_budget, CudaBackend, ForwardLimits,
    };
    use tessera_model::cuda::ptx_cache::PtxCache;
    use tessera_model::cuda::CudaDevice;

    /// The backend on `dev`, or (under `auto`) the CPU when it cannot be set up.
    pub(super) fn choose(
        spec: DeviceSpec,
        args: &EngineArgs,
        dev: CudaDevice,
        reason: &str,
    ) -> Result<Chosen> {
        if args.kv_cache_dtype == KvCacheDtype::F32 {
            let why = "--kv-cache-dtype f32: the CUDA backend keeps K and V in bf16; use f16 (the default, bf16 on a GPU)";
            if spec == DeviceSpec::Auto {
                eprintln!("tessera: device cpu (auto: {reason} passed over: {why})");
                return Ok(Chosen::Cpu);
            }
            bail!("--device {spec}: {why}");
        }
        let described = dev.to_string();
        let cache = PtxCache::default_dir().map(PtxCache::new);
        match CudaBackend::new(dev, cache.as_ref()) {
            Ok(backend) => {
                eprintln!("tessera: device {reason}");
                Ok(Chosen::Cuda(Box::new(backend)))
            }
            Err(e) if spec == DeviceSpec::Auto => {
                eprintln!("tessera: device cpu (auto: {described}: {e})");
                Ok(Chosen::Cpu)
            }
            Err(e) => bail!("--device {spec}: {described}: {e}"),
        }
    }

    /// Loads onto `backend`; the KV pool gets --kv-cache-memory, or what
    /// --gpu-memory-utilization leaves after the weights and a forward's
    /// activations.
    pub(super) fn start(
        backend: CudaBackend,
        args: &EngineArgs,
        path: PathBuf,
        source: &ModelSource,
    ) -> Result<Serving> {
        let budget =
            |backend: &CudaBackend, config: &ModelConfig, _per_token: u64| -> Result<u64> {
                CudaBackend::check_model(config)
                    .with_context(|| format!("--device {}", backend.name()))?;
                let memory = backend.memory_info()?;
                if let Some(bytes) = args.kv_cache_memory {
                    if bytes > memory.free {
                        bail!(
                            "--kv-cache-memory {bytes} bytes: {} has {} MiB free after loading",
                            backend.name(),
                            memory.free >> 20
                        );
                    }
                    return Ok(bytes);
                }
                let limits = ForwardLimits {
                    max_tokens: args.max_num_batched_tokens,
                    max_logit_rows: args.max_num_seqs,
                    max_model_len: config.max_position_embeddings,
                };
                Ok(kv_cache_budget(
                    memory,
                    args.gpu_memory_utilization,
                    activation_bytes(config, &limits),
                )?)
            };
        start_on(backend, args, path, source, budget)
    }
}

/// Bytes of K and V for one token over all layers.
fn kv_bytes_per_token(c: &ModelConfig, dtype: KvCacheDtype) -> u64 {
    (2 * c.num_layers * c.num_kv_heads * c.head_dim * dtype.bytes()) as u64
}

/// A quarter of available memory, but no more than `max_seqs` full-length
/// sequences need.
fn default_kv_budget(per_token: u64, max_len: usize, max_seqs: usize) -> u64 {
    let needed = per_token * (max_len * max_seqs) as u64;
    let available = available_memory().unwrap_or(4 << 30);
    needed.min(available / 4).max(per_token * BLOCK_SIZE as u64)
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
