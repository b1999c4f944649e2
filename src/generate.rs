//! `tessera generate`: one prompt through the engine, streamed to stdout, with
//! throughput on stderr.

use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Result};
use tessera_engine::request::{Priority, Request};
use tessera_engine::sampling::SamplingParams;
use tessera_model::chat::ChatMessage;

use crate::engine_setup::{self, EngineArgs};

/// Arguments of `tessera generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    engine: EngineArgs,
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
    /// Keep the smallest set of likeliest tokens whose probability reaches this.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Keep only the k likeliest tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Seed of the sampler's random numbers.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop when this text appears (not printed); may be repeated.
    #[arg(long)]
    stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let serving = engine_setup::start(&args.engine)?;
    let text = if args.chat {
        let template = tessera_model::chat::require(serving.chat_template.as_ref())?;
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
    let prompt = serving.tokenizer.encode(&text, !args.chat)?;
    if prompt.is_empty() {
        bail!("the prompt encodes to no tokens");
    }
    let prompt_len = prompt.len();
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        seed: args.seed,
        max_tokens: args.max_tokens,
        stop: args.stop,
        ignore_eos: args.ignore_eos,
        ..SamplingParams::default()
    };
    let start = Instant::now();
    let mut stream = serving.engine.submit(Request {
        prompt_token_ids: prompt,
        params,
        priority: Priority::Interactive,
    })?;
    let mut stdout = std::io::stdout().lock();
    let mut first_token = None;
    let mut generated = 0usize;
    while let Some(out) = stream.blocking_next() {
        if let Some(error) = out.error {
            bail!("generation failed: {error}");
        }
        if first_token.is_none() && !out.token_ids.is_empty() {
            first_token = Some(Instant::now());
        }
        generated += out.token_ids.len();
        stdout.write_all(out.text.as_bytes())?;
        stdout.flush()?;
        if out.usage.is_some() {
            break;
        }
    }
    writeln!(stdout)?;
    let end = Instant::now();
    let first = first_token.unwrap_or(end);
    let prefill = (first - start).as_secs_f64();
    let decode = (end - first).as_secs_f64();
    // The first token comes out of the prefill; decode steps made the rest.
    let decode_steps = generated.saturating_sub(1);
    eprintln!(
        "tessera: prompt {prompt_len} tokens in {prefill:.3}s ({:.1} tok/s); decode {decode_steps} tokens in {decode:.3}s ({:.1} tok/s)",
        prompt_len as f64 / prefill.max(1e-9),
        decode_steps as f64 / decode.max(1e-9),
    );
    Ok(())
}
