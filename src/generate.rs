//! `tessera generate`: one prompt, streamed to stdout, with throughput on stderr.
//!
//! Runs a single sequence through the model runner: the prompt in chunks
//! (chunked prefill), then one decode step per token.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use tessera_engine::{Batch, IncrementalDetokenizer, Runner, SequenceChunk};
use tessera_model::backend::cpu::CpuBackend;
use tessera_model::chat::ChatMessage;
use tessera_model::loader::{load_bundle, ModelSource};
use tessera_model::runner::{CacheConfig, ModelRunner};

use crate::model_path;

/// Arguments of `tessera generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// GGUF file, Hugging Face model directory or hub repo id (default: the
    /// default model under models/).
    #[arg(long)]
    model: Option<String>,
    /// The prompt text.
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// System message (with --chat).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Seed of the sampler's random numbers.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Tokens per prefill chunk.
    #[arg(long, default_value_t = 512)]
    prefill_chunk: usize,
}

const BLOCK_SIZE: usize = 16;

pub fn run(args: GenerateArgs) -> Result<()> {
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        anyhow::bail!("--temperature must be a finite number >= 0");
    }
    if args.prefill_chunk == 0 {
        anyhow::bail!("--prefill-chunk must be positive");
    }
    let path = model_path::resolve(args.model.as_deref())?;
    let source = ModelSource::detect(&path)?;
    let load_start = Instant::now();
    let backend = CpuBackend::new();
    let bundle = load_bundle(&backend, &source, None)
        .with_context(|| format!("loading {}", path.display()))?;
    let tokenizer = bundle.tokenizer;
    let text = if args.chat {
        let template = tessera_model::chat::require(bundle.chat_template.as_ref())?;
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::system(system.clone()));
        }
        messages.push(ChatMessage::user(args.prompt.clone()));
        template.render(&messages, true)?
    } else {
        args.prompt.clone()
    };
    tracing::debug!(prompt = %text, "rendered prompt");
    // A chat template writes its own BOS; a raw prompt gets the model's.
    let prompt = tokenizer.encode(&text, !args.chat)?;
    if prompt.is_empty() {
        anyhow::bail!("the prompt encodes to no tokens");
    }
    let max_len = bundle.model.config.max_position_embeddings;
    if prompt.len() + args.max_tokens > max_len {
        anyhow::bail!(
            "prompt ({} tokens) plus --max-tokens ({}) exceeds the context length {max_len}",
            prompt.len(),
            args.max_tokens
        );
    }
    let total = prompt.len() + args.max_tokens;
    let num_blocks = total.div_ceil(BLOCK_SIZE);
    let mut runner = ModelRunner::new(
        backend,
        bundle.model,
        CacheConfig {
            block_size: BLOCK_SIZE,
            num_blocks,
            max_model_len: max_len,
        },
    )?;
    let block_table: Vec<u32> = (0..num_blocks as u32).collect();
    eprintln!(
        "tessera: loaded {} in {:.2}s; prompt {} tokens",
        path.display(),
        load_start.elapsed().as_secs_f64(),
        prompt.len()
    );

    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut detok = IncrementalDetokenizer::new(&prompt, true);
    let mut stdout = std::io::stdout().lock();
    let step = |runner: &mut ModelRunner<CpuBackend>, tokens: &[u32], start: usize, last: bool| {
        runner.execute(&Batch {
            chunks: vec![SequenceChunk {
                token_ids: tokens.to_vec(),
                start_position: start,
                block_table: block_table.clone(),
                wants_logits: last,
            }],
        })
    };

    let prefill_start = Instant::now();
    let mut logits = None;
    for (i, chunk) in prompt.chunks(args.prefill_chunk).enumerate() {
        let start = i * args.prefill_chunk;
        let last = start + chunk.len() == prompt.len();
        logits = Some(step(&mut runner, chunk, start, last)?);
    }
    let prefill_secs = prefill_start.elapsed().as_secs_f64();
    let mut logits = logits.context("prompt produced no logits")?;

    let decode_start = Instant::now();
    let mut generated = 0usize;
    let eos = tokenizer.eos_token_ids().to_vec();
    loop {
        let next = sample(logits.row(0), args.temperature, &mut rng);
        generated += 1;
        let is_eos = eos.contains(&next);
        if !is_eos || args.ignore_eos {
            let piece = detok.push(&tokenizer, next).map_err(anyhow::Error::msg)?;
            stdout.write_all(piece.as_bytes())?;
            stdout.flush()?;
        }
        if (is_eos && !args.ignore_eos) || generated == args.max_tokens {
            break;
        }
        logits = step(&mut runner, &[next], prompt.len() + generated - 1, true)?;
    }
    stdout.write_all(
        detok
            .flush(&tokenizer)
            .map_err(anyhow::Error::msg)?
            .as_bytes(),
    )?;
    writeln!(stdout)?;
    let decode_secs = decode_start.elapsed().as_secs_f64();
    // The first generated token comes from the prefill; decode steps made the rest.
    let decode_steps = generated.saturating_sub(1);
    eprintln!(
        "tessera: prompt {} tokens in {:.3}s ({:.1} tok/s); decode {} tokens in {:.3}s ({:.1} tok/s)",
        prompt.len(),
        prefill_secs,
        prompt.len() as f64 / prefill_secs,
        decode_steps,
        decode_secs,
        decode_steps as f64 / decode_secs.max(1e-9),
    );
    Ok(())
}

/// Greedy at temperature 0, else a draw from `softmax(logits / temperature)`.
fn sample(logits: &[f32], temperature: f32, rng: &mut impl Rng) -> u32 {
    let argmax = || {
        let mut best = 0;
        for (i, &x) in logits.iter().enumerate() {
            if x > logits[best] {
                best = i;
            }
        }
        best as u32
    };
    if temperature == 0.0 {
        return argmax();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> = logits
        .iter()
        .map(|&x| (((x - max) / temperature) as f64).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut r = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        r -= w;
        if r <= 0.0 {
            return i as u32;
        }
    }
    argmax()
}
