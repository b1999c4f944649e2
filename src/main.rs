//! The `tessera` command line: a thin layer over the library crates.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tessera::{generate, serve};

/// tessera: a model-serving engine for large language models.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve models over an OpenAI-compatible HTTP API.
    Serve(serve::ServeArgs),
    /// Generate text from a prompt, streaming it to stdout.
    Generate(generate::GenerateArgs),
    /// Download a model repository from the Hugging Face hub (honours HF_ENDPOINT,
    /// HF_HOME and HF_TOKEN).
    Pull(PullArgs),
    /// Benchmark any OpenAI-compatible server (tessera, llama-server, vLLM)
    /// from the client side: TTFT, TPOT, ITL, latency, throughput, goodput.
    Bench(Box<tessera_bench::BenchCommand>),
}

#[derive(Debug, clap::Args)]
struct PullArgs {
    /// Repository id, e.g. `HuggingFaceTB/SmolLM2-135M-Instruct`.
    repo_id: String,
    /// Branch, tag or commit.
    #[arg(long)]
    revision: Option<String>,
    /// Only files matching these glob patterns (`*` and `?`), e.g. `*Q4_K_M.gguf`.
    /// Default: config, tokenizer and safetensors files.
    #[arg(long)]
    include: Vec<String>,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,tessera=info,tessera_server=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Bench(command) => Ok(tessera_bench::bench::run(*command)?),
        Command::Pull(args) => {
            let dir: PathBuf = tessera_model::hub::pull(
                &args.repo_id,
                &tessera_model::hub::PullOptions {
                    revision: args.revision,
                    include: args.include,
                    progress: true,
                },
            )?;
            println!("{}", dir.display());
            Ok(())
        }
    }
}
