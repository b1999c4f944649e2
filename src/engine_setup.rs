//! Building engines, for every command that generates, the benches and the
//! tests alike: [`Compute`] is the device and the compute pool, opened once
//! per process; [`EngineOptions`] (engine_options.rs) are one model's engine settings;
//! [`Compute::plan`] sizes a model's memory from its header and
//! [`Compute::load`] puts it on the device as a running, warmed engine.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tessera_engine::batch::{Batch, SequenceChunk};
use tessera_engine::engine::{spawn, EngineConfig, EngineHandle, EngineTask};
use tessera_engine::runner::Runner;
use tessera_model::backend::cpu::CpuBackend;
use tessera_model::backend::{Backend, KvCacheDtype};
use tessera_model::chat::ChatTemplate;
use tessera_model::config::ModelConfig;
use tessera_model::device::{self, Device, DeviceSpec};
use tessera_model::encoder::{
    decoder_embedding_head, is_encoder_dir, BertModel, EncoderConfig, EncoderRunner,
};
use tessera_model::loader::{load_bundle, read_config, weight_file_bytes, ModelSource};
use tessera_model::runner::{CacheConfig, ModelRunner};
use tessera_model::tokenizer::Tokenizer;

pub use crate::engine_options::{
    parse_bytes, EngineArgs, EngineOptions, KvCacheSize, MODEL_OPTION_KEYS,
};

/// Tokens per KV block.
const BLOCK_SIZE: usize = 16;

/// The share of available memory the CPU's default memory budget takes.
const CPU_BUDGET_SHARE: f64 = 0.9;

/// A model's memory, decided before it loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Its weights, as the device will hold them.
    pub weight_bytes: u64,
    /// Its KV cache.
    pub kv_bytes: u64,
    /// Bytes of K and V one token takes.
    pub kv_bytes_per_token: u64,
    /// Its serving length cap.
    pub max_model_len: usize,
}

impl MemoryPlan {
    /// Weights plus KV cache: what the budget reserves for it.
    pub fn total(&self) -> u64 {
        self.weight_bytes + self.kv_bytes
    }

    /// Blocks of the KV pool (none for an encoder, which keeps no KV).
    pub fn num_blocks(&self) -> usize {
        self.kv_bytes
            .checked_div(self.kv_bytes_per_token * BLOCK_SIZE as u64)
            .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// A running engine and what the front end needs beside it.
pub struct Loaded {
    /// The engine, its model warmed by one forward step.
    pub engine: EngineHandle,
    /// The model's tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// Its chat template.
    pub chat_template: Option<ChatTemplate>,
    /// The file or directory loaded.
    pub path: PathBuf,
    /// Its memory.
    pub plan: MemoryPlan,
    /// How long loading and warming took.
    pub load_time: Duration,
    /// Set for an embedding model (its engine computes vectors, not text).
    pub embedding: Option<tessera_server::EmbeddingInfo>,
}

/// The device the models run on and the compute pool, opened once for the
/// process: every model loads onto it.
pub struct Compute {
    chosen: Chosen,
    /// The GPU budget's share of device memory.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    gpu_memory_utilization: f64,
}

impl Compute {
    /// Opens `device` (a CUDA device is set up here, its kernels compiled
    /// or read from the PTX cache, before any model is read) and sizes the
    /// compute pool to `threads` (none: one per core).
    pub fn open(
        device: DeviceSpec,
        threads: Option<u16>,
        kv_cache_dtype: KvCacheDtype,
        gpu_memory_utilization: f64,
    ) -> Result<Self> {
        if let Some(threads) = threads {
            size_thread_pool(usize::from(threads))?;
        }
        Ok(Self {
            chosen: choose_device(device, kv_cache_dtype)?,
            gpu_memory_utilization,
        })
    }

    /// The CPU, with the compute pool as it is.
    pub fn cpu() -> Self {
        Self {
            chosen: Chosen::Cpu,
            gpu_memory_utilization: 1.0,
        }
    }

    /// `cpu` or `cuda`.
    pub fn backend_name(&self) -> &'static str {
        match self.chosen {
            Chosen::Cpu => "cpu",
            #[cfg(feature = "cuda")]
            Chosen::Cuda(_) => "cuda",
        }
    }

    /// The default memory budget: on the CPU, 90% of the memory available
    /// now; on a GPU, `--gpu-memory-utilization` of its memory.
    pub fn default_budget(&self) -> Result<u64> {
        match &self.chosen {
            Chosen::Cpu => {
                let available = available_memory().unwrap_or(4 << 30);
                Ok((available as f64 * CPU_BUDGET_SHARE) as u64)
            }
            #[cfg(feature = "cuda")]
            Chosen::Cuda(backend) => {
                let memory = backend.memory_info()?;
                Ok((memory.total as f64 * self.gpu_memory_utilization) as u64)
            }
        }
    }

    /// Sizes the model at `path` from its header: its weights as the device
    /// holds them and its KV cache under `options`, when the memory budget
    /// is `budget` in all.
    pub fn plan(&self, path: &Path, options: &EngineOptions, budget: u64) -> Result<MemoryPlan> {
        let source = ModelSource::detect(path)?;
        if let ModelSource::HfDir(dir) = &source {
            if is_encoder_dir(dir) {
                return plan_encoder(dir, options);
            }
        }
        let config = read_config(&source).with_context(|| format!("reading {}", path.display()))?;
        let max_model_len = options
            .max_model_len
            .unwrap_or(config.trained_context_len)
            .min(config.trained_context_len);
        let per_token = kv_bytes_per_token(&config, options.kv_cache_dtype);
        let weight_bytes = match &self.chosen {
            Chosen::Cpu => weight_file_bytes(&source)?,
            #[cfg(feature = "cuda")]
            Chosen::Cuda(_) => cuda::weight_bytes(&config, options, max_model_len),
        };
        let block = per_token * BLOCK_SIZE as u64;
        let kv_bytes = match options.kv_cache {
            KvCacheSize::Bytes(bytes) => bytes,
            KvCacheSize::Blocks(n) => n as u64 * block,
            KvCacheSize::Auto => match &self.chosen {
                Chosen::Cpu => {
                    let needed = per_token * (max_model_len * options.max_num_seqs) as u64;
                    needed.min(budget / 4)
                }
                #[cfg(feature = "cuda")]
                Chosen::Cuda(_) => budget.saturating_sub(weight_bytes),
            },
        };
        // Whole blocks only.
        let kv_bytes = kv_bytes / block * block;
        if kv_bytes == 0 {
            bail!(
                "the KV cache would hold no block of {BLOCK_SIZE} tokens ({block} bytes); \
                 give the model more kv-cache-memory or the server a larger memory budget"
            );
        }
        Ok(MemoryPlan {
            weight_bytes,
            kv_bytes,
            kv_bytes_per_token: per_token,
            max_model_len,
        })
    }

    /// Loads the model at `path` with `plan`'s KV cache, starts its engine
    /// and warms it with one real forward step.
    pub fn load(&self, path: &Path, options: &EngineOptions, plan: &MemoryPlan) -> Result<Loaded> {
        let started = Instant::now();
        let source = ModelSource::detect(path)?;
        if let ModelSource::HfDir(dir) = &source {
            if is_encoder_dir(dir) {
                if self.backend_name() != "cpu" {
                    bail!(
                        "{}: embedding models run on the CPU only (--device cpu)",
                        path.display()
                    );
                }
                let (engine, tokenizer, info) = start_encoder(dir, options, plan)
                    .with_context(|| format!("loading {}", path.display()))?;
                return Ok(Loaded {
                    engine,
                    tokenizer,
                    chat_template: None,
                    path: path.to_path_buf(),
                    plan: *plan,
                    load_time: started.elapsed(),
                    embedding: Some(info),
                });
            }
        }
        let cache = CacheConfig {
            block_size: BLOCK_SIZE,
            num_blocks: plan.num_blocks(),
            max_model_len: plan.max_model_len,
            kv_dtype: options.kv_cache_dtype,
        };
        let (engine, tokenizer, chat_template, embedding) = match &self.chosen {
            Chosen::Cpu => start_engine(CpuBackend::new(), &source, options, cache, true),
            #[cfg(feature = "cuda")]
            Chosen::Cuda(backend) => cuda::start(backend, &source, options, cache),
        }
        .with_context(|| format!("loading {}", path.display()))?;
        Ok(Loaded {
            engine,
            tokenizer,
            chat_template,
            path: path.to_path_buf(),
            plan: *plan,
            load_time: started.elapsed(),
            embedding,
        })
    }
}

/// An encoder's plan: its weights, no KV cache, its serving length.
fn plan_encoder(dir: &Path, options: &EngineOptions) -> Result<MemoryPlan> {
    let config = EncoderConfig::from_dir(dir)?;
    Ok(MemoryPlan {
        weight_bytes: weight_file_bytes(&ModelSource::HfDir(dir.to_path_buf()))?,
        kv_bytes: 0,
        kv_bytes_per_token: 0,
        max_model_len: options
            .max_model_len
            .unwrap_or(config.max_model_len)
            .min(config.max_model_len),
    })
}

/// Loads an encoder and spawns its engine in embedding mode.
fn start_encoder(
    dir: &Path,
    options: &EngineOptions,
    plan: &MemoryPlan,
) -> Result<(EngineHandle, Arc<Tokenizer>, tessera_server::EmbeddingInfo)> {
    let mut model = BertModel::load(dir)?;
    model.config.max_model_len = plan.max_model_len;
    let info = tessera_server::EmbeddingInfo {
        dimensions: model.config.hidden_size,
        normalized: model.config.normalize,
        matryoshka: model.config.matryoshka,
    };
    let vocab_size = model.config.vocab_size;
    let tokenizer = Arc::new(Tokenizer::from_hf_dir(dir)?);
    let mut runner =
        EncoderRunner::new(model, options.max_num_batched_tokens, options.max_num_seqs);
    // One real input before the engine starts, as for a generative model.
    warm(&mut runner, 0)?;
    let config = engine_config(
        options,
        EngineTask::Embed,
        Vec::new(),
        vocab_size,
        &tokenizer,
        true,
    );
    let engine = spawn(runner, tokenizer.clone(), config)?;
    Ok((engine, tokenizer, info))
}

/// For one-model commands (`generate`): opens the device, resolves
/// `--model` and loads it under the flags, reporting it on stderr.
pub fn start(args: &EngineArgs) -> Result<Loaded> {
    let compute = args.open_compute()?;
    let path = crate::model_path::resolve(args.model.as_deref())?;
    let options = args.options();
    let plan = compute.plan(&path, &options, args.memory_budget(&compute)?)?;
    let loaded = compute.load(&path, &options, &plan)?;
    if loaded.embedding.is_some() {
        bail!(
            "{} is an embedding model: it computes vectors (`tessera serve`, /v1/embeddings), \
             not text",
            path.display()
        );
    }
    let on = match compute.backend_name() {
        "cpu" => format!("{} compute threads", rayon::current_num_threads()),
        gpu => format!("on {gpu}"),
    };
    eprintln!(
        "tessera: loaded {} in {:.2}s; KV cache {} tokens ({:.1} MiB, {}); context {}; {on}",
        path.display(),
        loaded.load_time.as_secs_f64(),
        plan.num_blocks() * BLOCK_SIZE,
        plan.kv_bytes as f64 / (1024.0 * 1024.0),
        options.kv_cache_dtype,
        plan.max_model_len,
    );
    Ok(loaded)
}

/// What [`Compute::load`] hands back before warming.
type Started = (
    EngineHandle,
    Arc<Tokenizer>,
    Option<ChatTemplate>,
    Option<tessera_server::EmbeddingInfo>,
);

/// Loads `source` onto `backend` (`on_cpu`: the CPU one) with `cache` and
/// spawns its engine.
fn start_engine<B: Backend + 'static>(
    backend: B,
    source: &ModelSource,
    options: &EngineOptions,
    cache: CacheConfig,
    on_cpu: bool,
) -> Result<Started> {
    let bundle = load_bundle(&backend, source, Some(cache.max_model_len))?;
    let config = bundle.model.config().clone();
    let mut runner = ModelRunner::new(backend, bundle.model, cache)?;
    // A decoder directory with sentence-transformers pooling is an embedder.
    let head = match source {
        ModelSource::HfDir(dir) => decoder_embedding_head(dir)?,
        ModelSource::Gguf(_) => None,
    };
    let embedding = head.map(|(head, matryoshka)| tessera_server::EmbeddingInfo {
        dimensions: config.hidden_size,
        normalized: head.normalize,
        matryoshka,
    });
    if let Some((head, _)) = head {
        runner = runner.with_embedding(head);
    }
    let task = match embedding {
        Some(_) => EngineTask::Embed,
        None => EngineTask::Generate,
    };
    let tokenizer = Arc::new(bundle.tokenizer);
    let token = tokenizer.eos_token_ids().first().copied().unwrap_or(0);
    warm(&mut runner, token)?;
    let eos = tokenizer.eos_token_ids().to_vec();
    let mut engine_config =
        engine_config(options, task, eos, config.vocab_size, &tokenizer, on_cpu);
    engine_config.enable_prefix_caching = !options.no_prefix_caching;
    let engine = spawn(runner, tokenizer.clone(), engine_config)?;
    Ok((engine, tokenizer, bundle.chat_template, embedding))
}

/// Batch prompt tokens per step on the CPU unless the flags say otherwise:
/// there a step's time grows with every token it computes (about 3 ms a
/// prompt token for the default model in a dev build), and an interactive
/// prompt arriving during a step waits for all of it.
const CPU_BATCH_PREFILL_TOKENS: usize = 32;

/// The engine's settings for a model under `options` on the CPU (`on_cpu`)
/// or a GPU (prefix caching off: generative models turn it on unless the
/// flags say not to). The vocabulary is the smaller of the model's and the
/// tokenizer's, so no id past either is ever sampled.
fn engine_config(
    options: &EngineOptions,
    task: EngineTask,
    eos_token_ids: Vec<u32>,
    model_vocab_size: usize,
    tokenizer: &Tokenizer,
    on_cpu: bool,
) -> EngineConfig {
    let default_batch_prefill = if on_cpu {
        CPU_BATCH_PREFILL_TOKENS
    } else {
        options.max_num_batched_tokens
    };
    EngineConfig {
        max_num_batched_tokens: options.max_num_batched_tokens,
        max_num_seqs: options.max_num_seqs,
        max_batch_seqs: options
            .batch_max_running
            .unwrap_or(options.max_num_seqs / 2)
            .max(1),
        max_batch_prefill_tokens: options
            .batch_max_prefill_tokens
            .unwrap_or(default_batch_prefill)
            .max(1),
        hold_batch_for_interactive_prefill: !options.batch_with_interactive_prefill,
        enable_prefix_caching: false,
        max_waiting_requests: options.max_waiting_requests,
        eos_token_ids,
        vocab_size: model_vocab_size.min(tokenizer.vocab_size().max(1)).max(1),
        task,
    }
}

/// Runs one real forward step (one token, logits out) on the runner before
/// its engine starts, so the first client does not pay for page faults and
/// lazily built state. It writes the KV of block 0, which is free: whatever
/// sequence takes that block writes its own K and V before reading them.
fn warm<R: Runner>(runner: &mut R, token: u32) -> Result<()>
where
    R::Error: Send + Sync + 'static,
{
    let batch = Batch {
        chunks: vec![SequenceChunk {
            token_ids: vec![token],
            start_position: 0,
            block_table: vec![0],
            wants_logits: true,
        }],
    };
    let logits = runner
        .execute(&batch)
        .map_err(|e| anyhow::anyhow!("the warm-up step failed: {e}"))?;
    if logits.rows() != 1 || logits.data.iter().any(|v| !v.is_finite()) {
        bail!(
            "the warm-up step gave {} rows of logits, not one row of finite values",
            logits.rows()
        );
    }
    Ok(())
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

/// The device the models run on, ready before anything is loaded.
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
#[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
fn choose_device(spec: DeviceSpec, kv_cache_dtype: KvCacheDtype) -> Result<Chosen> {
    let selection = device::select(spec)?;
    match selection.device {
        Device::Cpu => {
            if spec != DeviceSpec::Cpu {
                eprintln!("tessera: device {}", selection.reason);
            }
            Ok(Chosen::Cpu)
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(dev) => cuda::choose(spec, kv_cache_dtype, dev, &selection.reason),
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    //! The CUDA side: the backend built on the opened device, and models
    //! loaded onto it.

    use super::*;
    use tessera_model::backend::cuda::{activation_bytes, CudaBackend, ForwardLimits};
    use tessera_model::cuda::ptx_cache::PtxCache;
    use tessera_model::cuda::CudaDevice;

    /// The backend on `dev`, or (under `auto`) the CPU when it cannot be set up.
    pub(super) fn choose(
        spec: DeviceSpec,
        kv_cache_dtype: KvCacheDtype,
        dev: CudaDevice,
        reason: &str,
    ) -> Result<Chosen> {
        if kv_cache_dtype == KvCacheDtype::F32 {
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

    /// Weights in bf16 (the GPU dequantizes every matrix at upload) plus
    /// one forward's activations, from the configuration alone.
    pub(super) fn weight_bytes(
        config: &ModelConfig,
        options: &EngineOptions,
        max_model_len: usize,
    ) -> u64 {
        let (h, i, v, l) = (
            config.hidden_size as u64,
            config.intermediate_size as u64,
            config.vocab_size as u64,
            config.num_layers as u64,
        );
        let per_layer =
            h * config.qkv_width() as u64 + config.q_width() as u64 * h + 3 * h * i + 2 * h;
        let embeddings = if config.tie_word_embeddings {
            v * h
        } else {
            2 * v * h
        };
        let limits = ForwardLimits {
            max_tokens: options.max_num_batched_tokens,
            max_logit_rows: options.max_num_seqs,
            max_model_len,
        };
        2 * (l * per_layer + embeddings + h) + activation_bytes(config, &limits)
    }

    /// Loads onto the process's one CUDA backend: every model shares its
    /// device, kernels and cuBLASLt handle.
    pub(super) fn start(
        backend: &CudaBackend,
        source: &ModelSource,
        options: &EngineOptions,
        cache: CacheConfig,
    ) -> Result<Started> {
        let config = read_config(source)?;
        CudaBackend::check_model(&config)
            .with_context(|| format!("--device {}", backend.name()))?;
        start_engine(backend.share(), source, options, cache, false)
    }
}

/// Bytes of K and V for one token over all layers.
fn kv_bytes_per_token(c: &ModelConfig, dtype: KvCacheDtype) -> u64 {
    (2 * c.num_layers * c.num_kv_heads * c.head_dim * dtype.bytes()) as u64
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
