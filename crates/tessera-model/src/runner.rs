//! [`ModelRunner`]: a model, a backend and a KV pool, driven by the engine through
//! [`tessera_engine::Runner`].

use tessera_engine::{Batch, Logits, Runner};

use crate::backend::{Backend, KvCacheDtype, KvCacheShape};
use crate::batch::FlatBatch;
use crate::encoder::{EmbeddingHead, Pooling};
use crate::error::{ModelError, Result};
use crate::families::CausalLm;

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

/// Runs batches of a model ([`CausalLm`]) on a backend over a paged KV cache.
pub struct ModelRunner<B: Backend> {
    backend: B,
    model: Box<dyn CausalLm<B>>,
    cache: B::KvCache,
    cache_config: CacheConfig,
    /// Set for a decoder used as an embedder: rows are pooled hidden states.
    embedding: Option<EmbeddingHead>,
}

impl<B: Backend> ModelRunner<B> {
    /// Allocates the KV pool for `model`.
    pub fn new(backend: B, model: Box<dyn CausalLm<B>>, cache_config: CacheConfig) -> Result<Self> {
        if cache_config.block_size == 0 || cache_config.num_blocks == 0 {
            return Err(ModelError::Backend(format!(
                "empty KV pool: {cache_config:?}"
            )));
        }
        let c = model.config();
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
            embedding: None,
        })
    }

    /// Makes the runner an embedder: each sequence's row is its pooled (and,
    /// if `head` says so, normalized) final hidden state instead of logits.
    /// Its engine must run in embedding mode (whole prompts).
    pub fn with_embedding(mut self, head: EmbeddingHead) -> Self {
        self.embedding = Some(head);
        self
    }

    /// The model being run.
    pub fn model(&self) -> &dyn CausalLm<B> {
        self.model.as_ref()
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Runs a batch already flattened.
    pub fn forward(&mut self, batch: &FlatBatch) -> Result<Logits> {
        let vocab = self.model.config().vocab_size;
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
        if let Some(head) = self.embedding {
            return self.embed(batch, head);
        }
        let (model, backend, cache) = (&self.model, &self.backend, &mut self.cache);
        let logits = backend.install(|| model.forward(backend, cache, batch))?;
        Ok(Logits {
            vocab_size: vocab,
            data: self.backend.take_host(logits)?,
        })
    }
}

impl<B: Backend> ModelRunner<B> {
    /// One pooled vector per sequence of `batch`, each a whole input.
    fn embed(&mut self, batch: &FlatBatch, head: EmbeddingHead) -> Result<Logits> {
        let h = self.model.config().hidden_size;
        let mut rows = Vec::with_capacity(batch.token_ids.len());
        for s in &batch.seqs {
            if s.context_len != s.query_len || s.query_len == 0 {
                return Err(ModelError::InvalidBatch(
                    "an embedder runs whole inputs only (the engine must be in embedding mode)"
                        .into(),
                ));
            }
            let all = s.query_start..s.query_start + s.query_len;
            match head.pooling {
                Pooling::Mean => rows.extend(all),
                Pooling::Cls => rows.push(all.start),
                Pooling::LastToken => rows.push(all.end - 1),
            }
        }
        let (model, backend, cache) = (&self.model, &self.backend, &mut self.cache);
        let hidden = backend.install(|| {
            let x = model.final_hidden(backend, cache, batch)?;
            backend.take_host(backend.gather_rows(&x, &rows)?)
        })?;
        let mut out = vec![0f32; batch.seqs.len() * h];
        let mut at = 0;
        for (s, dst) in batch.seqs.iter().zip(out.chunks_exact_mut(h)) {
            let n = if head.pooling == Pooling::Mean {
                s.query_len
            } else {
                1
            };
            let mine = &hidden[at * h..(at + n) * h];
            at += n;
            // The rows gathered are exactly the ones to pool.
            let pooling = if n == 1 { Pooling::Cls } else { Pooling::Mean };
            crate::encoder::bert::pool(mine, h, pooling, dst);
            if head.normalize {
                crate::encoder::bert::normalize(dst);
            }
        }
        Ok(Logits {
            vocab_size: h,
            data: out,
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

    fn sliding_window(&self) -> Option<usize> {
        self.model.config().uniform_window()
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
