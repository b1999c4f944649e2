//! `tessera run-batch`: runs a batch file offline, without a server, in
//! vLLM's `run-batch` formats: the input is OpenAI batch lines
//! (`{custom_id, method, url, body}`, `url` being `/v1/chat/completions`,
//! `/v1/completions` or `/v1/embeddings`, mixed freely), the output one line per input line, in
//! input order, `{id, custom_id, response: {status_code, request_id, body},
//! error}`. Lines go through the same handlers as the server's, so they get
//! what the same requests would online.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use futures_util::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tessera_manager::{KeepAlive, ManagerSettings};
use tessera_server::batch::{parse_lines, Dispatcher, ENDPOINTS};
use tessera_server::{AppState, ModelManager, ServerConfig};

use crate::engine_options::EngineArgs;
use crate::model_path;
use crate::serve::models::{self, ServerLoader};

/// `tessera run-batch` flags.
#[derive(Debug, clap::Args)]
pub struct RunBatchArgs {
    /// The input file: one request per line.
    #[arg(short = 'i', long = "input-file", value_name = "FILE")]
    pub input: PathBuf,
    /// Where to write the output lines.
    #[arg(short = 'o', long = "output-file", value_name = "FILE")]
    pub output: PathBuf,
    /// The model's name in the lines' `model` [default: the file or repo name].
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Lines in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_concurrency: u64,
    /// No progress bar on stderr.
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Runs the batch: every line checked first (all problems reported, with
/// their line numbers, before anything runs), then run, then written.
pub fn run(mut args: RunBatchArgs) -> Result<()> {
    // Offline, batch lines are all the work there is: every slot is theirs.
    args.engine
        .batch_max_running
        .get_or_insert(args.engine.max_num_seqs as u64);
    args.engine
        .batch_max_prefill_tokens
        .get_or_insert(args.engine.max_num_batched_tokens as u64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tessera-batch")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: RunBatchArgs) -> Result<()> {
    let raw: Vec<Vec<u8>> = BufReader::new(
        std::fs::File::open(&args.input)
            .with_context(|| format!("cannot open {}", args.input.display()))?,
    )
    .split(b'\n')
    .collect::<Result<_, _>>()
    .with_context(|| format!("reading {}", args.input.display()))?;

    let compute = args.engine.open_compute()?;
    let settings = ManagerSettings {
        memory_budget: args.engine.memory_budget(&compute)?,
        max_loaded_models: None,
        keep_alive: KeepAlive::Forever,
        autoload: true,
    };
    let manager = ModelManager::new(
        Box::new(ServerLoader::new(compute, args.engine.options())),
        settings,
    );
    let model = args.engine.model.clone();
    let path = tokio::task::spawn_blocking(move || model_path::resolve(model.as_deref()))
        .await
        .context("resolving the model panicked")??;
    let name = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| crate::serve::default_name(args.engine.model.as_deref(), &path));
    manager.add_model(models::single(&name, path));
    manager
        .load(&name, Some(1))?
        .wait()
        .await
        .map_err(|e| anyhow::anyhow!("loading {name}: {e}"))?;

    let known_models = manager.clone();
    let lines = parse_lines(raw, ENDPOINTS, |m| known(&known_models, m)).map_err(|errors| {
        let list: Vec<String> = errors
            .iter()
            .map(|e| match e.line {
                Some(n) => format!("  line {n}: {} ({})", e.message, e.code),
                None => format!("  {} ({})", e.message, e.code),
            })
            .collect();
        anyhow::anyhow!(
            "{} is not a valid batch file; nothing was run:\n{}",
            args.input.display(),
            list.join("\n")
        )
    })?;

    let state = AppState::new(manager, ServerConfig::default())?;
    state.set_ready(true);
    let dispatcher = Dispatcher::new(state);
    let progress = progress_bar(lines.len() as u64, args.no_progress);
    let concurrency = usize::try_from(args.max_concurrency).unwrap_or(usize::MAX);
    let mut results: Vec<(usize, String)> = stream::iter(lines.into_iter().enumerate())
        .map(|(i, line)| {
            let dispatcher = dispatcher.clone();
            let progress = progress.clone();
            async move {
                let outcome = dispatcher.run(&line.url, line.body).await;
                progress.inc(1);
                (i, outcome.to_line(&line.custom_id))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    progress.finish();
    results.sort_by_key(|(i, _)| *i);

    let out = std::fs::File::create(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let mut out = BufWriter::new(out);
    for (_, line) in &results {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    if results.is_empty() {
        bail!("no request was run");
    }
    eprintln!(
        "tessera: {} requests run, written to {}",
        results.len(),
        args.output.display()
    );
    Ok(())
}

/// Whether `model` (none: the default) names the loaded model.
fn known(manager: &Arc<ModelManager>, model: Option<&str>) -> bool {
    !matches!(
        manager.resolve(model, None),
        Err(tessera_manager::ResolveError::UnknownModel(_)
            | tessera_manager::ResolveError::UnknownVersion { .. }
            | tessera_manager::ResolveError::UnknownAlias { .. })
    )
}

fn progress_bar(len: u64, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} requests ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}
