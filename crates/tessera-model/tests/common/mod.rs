//! Helpers shared by the model crate's integration tests.
#![allow(dead_code)]

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod tiny;

use std::path::{Path, PathBuf};

use tessera_engine::{Batch, SequenceChunk};
use tessera_model::backend::cpu::CpuBackend;
use tessera_model::backend::KvCacheDtype;
use tessera_model::loader::{load_model, ModelSource};
use tessera_model::runner::{CacheConfig, ModelRunner};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The default model, which `scripts/fetch-model` places.
pub fn default_model() -> PathBuf {
    let p = repo_root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-model first",
        p.display()
    );
    p
}

/// A fixture file's lines parsed as JSON.
pub fn fixture_lines(name: &str) -> Vec<serde_json::Value> {
    let p = repo_root().join("tests/fixtures").join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture line is JSON"))
        .collect()
}

/// A CPU runner over the model at `path` with a pool of `num_blocks` blocks of 16.
pub fn cpu_runner(path: &Path, num_blocks: usize) -> ModelRunner<CpuBackend> {
    cpu_runner_with(path, num_blocks, KvCacheDtype::default())
}

/// [`cpu_runner`] with K and V stored as `kv_dtype`.
pub fn cpu_runner_with(
    path: &Path,
    num_blocks: usize,
    kv_dtype: KvCacheDtype,
) -> ModelRunner<CpuBackend> {
    let backend = CpuBackend::new();
    let source = ModelSource::detect(path).expect("model source");
    let model = load_model(&backend, &source, Some(4096)).expect("model loads");
    ModelRunner::new(
        backend,
        model,
        CacheConfig {
            block_size: 16,
            num_blocks,
            max_model_len: 4096,
            kv_dtype,
        },
    )
    .expect("runner")
}

/// The prompt the reference comparisons run: ids spread over the tiny
/// vocabulary, with a repeated run.
pub const REFERENCE_PROMPT: [u32; 21] = [
    1, 17, 300, 5, 77, 411, 2, 9, 120, 255, 256, 3, 500, 42, 42, 42, 7, 310, 64, 99, 11,
];

/// Our CPU runner's logits for the last token of `prompt` (one sequence,
/// K and V in f32 as candle keeps them, so references compare like for like).
pub fn f32_kv_logits(path: &Path, prompt: &[u32]) -> Vec<f32> {
    let mut runner = cpu_runner_with(path, 16, KvCacheDtype::F32);
    let out = tessera_engine::Runner::execute(
        &mut runner,
        &batch(vec![(prompt.to_vec(), 0, (0..4).collect(), true)]),
    )
    .expect("forward");
    out.row(0).to_vec()
}

/// Hands out KV blocks for test sequences: sequence `i` owns a disjoint range.
pub struct Blocks {
    pub per_seq: usize,
}

impl Blocks {
    pub fn table(&self, seq: usize) -> Vec<u32> {
        (0..self.per_seq)
            .map(|b| (seq * self.per_seq + b) as u32)
            .collect()
    }
}

/// A batch of one chunk per (tokens, start, table).
pub fn batch(chunks: Vec<(Vec<u32>, usize, Vec<u32>, bool)>) -> Batch {
    Batch {
        chunks: chunks
            .into_iter()
            .map(
                |(token_ids, start_position, block_table, wants_logits)| SequenceChunk {
                    token_ids,
                    start_position,
                    block_table,
                    wants_logits,
                },
            )
            .collect(),
    }
}

/// Index of the largest value.
pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A candle `VarBuilder` over the test model's `model.safetensors`, in f32.
pub fn weights(dir: &Path) -> candle_nn::VarBuilder<'static> {
    // SAFETY: the test wrote the file and nothing changes it while mapped.
    unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
    }
    .expect("weights")
}

/// `prompt` as a candle batch of one.
pub fn input(prompt: &[u32]) -> candle_core::Tensor {
    candle_core::Tensor::new(prompt, &candle_core::Device::Cpu)
        .and_then(|t| t.unsqueeze(0))
        .expect("input")
}

/// Our logits against a reference's: within 1e-4 of the largest logit
/// (same math, different summation order), and the same greedy token.
pub fn compare(what: &str, ours: &[f32], theirs: &[f32]) {
    let diff = max_abs_diff(ours, theirs);
    let scale = theirs.iter().fold(0f32, |m, x| m.max(x.abs()));
    eprintln!("{what}: max |tessera - candle| = {diff:.2e} (logit scale {scale:.2})");
    assert!(
        diff <= 1e-4 * scale.max(1.0),
        "{what}: {diff} vs scale {scale}"
    );
    assert_eq!(argmax(ours), argmax(theirs), "{what}: greedy tokens differ");
}
