//! [`ModelRunner`]: a model, a backend and a KV pool, driven by the engine through
//! [`tessera_engine::Runner`].

use tessera_engine::{Batch, Logits, Runner};

use crate::backend::{Backend, KvCacheDtype, KvCacheShape};
use crate::batch::FlatBatch;
use crate::error::{ModelError, Result};
use crate::llama::LlamaModel;

/// Size of the KV pool and of the longest sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    pub block_size: usize,
    pub num_blocks: usize,
    /// Longest sequence (prompt plus output) accepted; at most the model's context.
    pub max_model_len: usize,
    /// How K and V values are stored.
    pub kv_dtype: KvCacheDtype,
}

/// Runs batches of a [`LlamaModel`] on a backend over a paged KV cache.
pub struct ModelRunner<B: Backend> {
    backend: B,
    model: LlamaModel<B>,
    cache: B::KvCache,
    cache_config: CacheConfig,
}

impl<B: Backend> ModelRunner<B> {
    /// Allocates the KV pool for `model`.
    pub fn new(backend: B, model: LlamaModel<B>, cache_config: CacheConfig) -> Result<Self> {
        if cache_config.block_size == 0 || cache_config.num_blocks == 0 {
            return Err(ModelError::Backend(format!(
                "empty KV pool: {cache_config:?}"
            )));
        }
        let c = &model.config;
        let cache = backend.alloc_kv_cache(KvCacheShape {
            num_layers: c.num_layers,
            num_blocks: cache_config.num_blocks,
            block_size: cache_config.block_size,
            num_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            dtype: cache_config.kv_dtype,
        })?;
        Ok(Self {
            backend,
            model,
            cache,
            cache_config,
        })
    }

    /// The model being run.
    pub fn model(&self) -> &LlamaModel<B> {
        &self.model
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Runs a batch already flattened.
    pub fn forward(&mut self, batch: &FlatBatch) -> Result<Logits> {
        let vocab = self.model.config.vocab_size;
        if let Some(&t) = batch.token_ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(ModelError::InvalidBatch(format!(
                "token id {t} outside the vocabulary of {vocab}"
            )));
        }
        if batch.logit_rows.is_empty() && batch.token_ids.is_empty() {
            return Ok(Logits {
                vocab_size: vocab,
                data: Vec::new(),
            });
        }
        let (model, backend, cache) = (&self.model, &self.backend, &mut self.cache);
        let logits = backend.install(|| model.forward(backend, cache, batch))?;
        Ok(Logits {
            vocab_size: vocab,
            data: self.backend.take_host(logits)?,
        })
    }
}

impl<B: Backend> Runner for ModelRunner<B>
where
    B::KvCache: Send,
    B: Send,
    B::Linear: Send,
    B::Tensor: Send,
{
    type Error = ModelError;

    fn block_size(&self) -> usize {
        self.cache_config.block_size
    }

    fn num_blocks(&self) -> usize {
        self.cache_config.num_blocks
    }

    fn max_model_len(&self) -> usize {
        self.cache_config.max_model_len
    }

    fn execute(&mut self, batch: &Batch) -> Result<Logits> {
        let flat = FlatBatch::new(
            batch,
            self.cache_config.block_size,
            self.cache_config.num_blocks,
            self.cache_config.max_model_len,
        )?;
        self.forward(&flat)
    }
}
