//! The `tessera` command line: a thin layer over the library crates.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use tessera::config_file::{self, ConfigFile};
use tessera::serve::args::LogFormat;
use tessera::{generate, logging, serve};

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
    Serve(Box<serve::ServeArgs>),
    /// Generate text from a prompt, streaming it to stdout.
    Generate(Box<generate::GenerateArgs>),
    /// Download a model repository from the Hugging Face hub (honours HF_ENDPOINT,
    /// HF_HOME and HF_TOKEN).
    Pull(PullArgs),
    /// Benchmark any OpenAI-compatible server (tessera, llama-server, vLLM)
    /// from the client side: TTFT, TPOT, ITL, latency, throughput, goodput.
    Bench(Box<tessera_bench::BenchCommand>),
    /// Run a batch file offline, without a server (vLLM's `run-batch`
    /// formats: OpenAI batch lines in, one output line per input line out).
    RunBatch(Box<tessera::run_batch::RunBatchArgs>),
    /// Drift monitoring tools.
    #[command(subcommand)]
    Drift(DriftCommand),
}

#[derive(Debug, Subcommand)]
enum DriftCommand {
    /// Make a drift reference from a payload log (`--payload-log file:PATH`),
    /// for `serve --drift-baseline`.
    Baseline {
        /// The payload log (JSON lines).
        #[arg(long)]
        from: PathBuf,
        /// Where to write the baseline.
        #[arg(short, long)]
        output: PathBuf,
        /// The model whose responses to use [default: the only one in the log].
        #[arg(long)]
        model: Option<String>,
    },
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

/// Parses the command line; with `serve --config FILE`, parses it again with
/// the file's values as defaults (flags and environment still win).
fn parse(args: &[OsString]) -> Result<(Cli, ArgMatches, Option<ConfigFile>)> {
    let matches = Cli::command()
        .try_get_matches_from(args)
        .unwrap_or_else(|e| e.exit());
    let path = matches
        .subcommand_matches("serve")
        .and_then(|m| m.get_one::<PathBuf>("config"))
        .cloned();
    let Some(path) = path else {
        return Ok((Cli::from_arg_matches(&matches)?, matches, None));
    };
    let file = ConfigFile::load(&path)?;
    let matches = file
        .apply(Cli::command(), "serve")?
        .try_get_matches_from(args)
        .unwrap_or_else(|e| e.exit());
    Ok((Cli::from_arg_matches(&matches)?, matches, Some(file)))
}

/// `serve --print-config`: the options in effect, and where each came from.
fn print_config(matches: &ArgMatches, file: Option<&ConfigFile>) -> Result<()> {
    let cmd = Cli::command();
    let (Some(sub), Some(sub_matches)) = (
        cmd.find_subcommand("serve"),
        matches.subcommand_matches("serve"),
    ) else {
        anyhow::bail!("--print-config belongs to `tessera serve`");
    };
    let from_file = file.map(ConfigFile::keys).unwrap_or_default();
    print!("{}", config_file::effective(sub, sub_matches, &from_file));
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let (cli, matches, file) = parse(&args)?;
    let format = match &cli.command {
        Command::Serve(a) => a.log_format,
        _ => LogFormat::Text,
    };
    logging::init(format);
    match cli.command {
        Command::Serve(args) if args.print_config => print_config(&matches, file.as_ref()),
        Command::Serve(args) => {
            let models = match &file {
                Some(f) => serve::models::from_config(f.path(), f.models())?,
                None => Vec::new(),
            };
            serve::run(*args, models)
        }
        Command::Generate(args) => generate::run(*args),
        Command::RunBatch(args) => tessera::run_batch::run(*args),
        Command::Bench(command) => Ok(tessera_bench::bench::run(*command)?),
        Command::Drift(DriftCommand::Baseline {
            from,
            output,
            model,
        }) => {
            use tessera_server::monitoring::Baseline;
            let b = Baseline::from_payload(&from, model.as_deref())?;
            b.save(&output)?;
            let counts: Vec<String> = b
                .signals
                .iter()
                .map(|(s, v)| format!("{s} {}", v.len()))
                .collect();
            eprintln!(
                "tessera: baseline of {} written to {} ({})",
                b.model,
                output.display(),
                counts.join(", ")
            );
            Ok(())
        }
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
