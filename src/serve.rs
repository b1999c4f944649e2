//! `tessera serve`: the OpenAI-compatible HTTP server over one model.
//!
//! The socket is bound first, so `/health` answers (and `/ready` says 503)
//! while the model loads; then the model is registered and the server turns
//! ready.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tessera_server::{AppState, ModelRegistry, ServedModel};

use crate::engine_setup::{self, parse_bytes, EngineArgs};
use crate::text_model::ModelText;

/// Arguments of `tessera serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// The name clients use in `model` (default: the --model argument, or the
    /// file name of the default model without `.gguf`).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed at start-up).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Largest request body, e.g. `8MiB` (larger ones get 413).
    #[arg(long, value_parser = parse_bytes, default_value = "8MiB")]
    pub max_request_bytes: u64,
    /// Seconds in-flight requests may run on after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 30.0)]
    pub shutdown_timeout: f64,
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tessera-http")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> Result<()> {
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    let registry = Arc::new(ModelRegistry::new());
    let state = AppState {
        registry: registry.clone(),
        max_body_bytes: usize::try_from(args.max_request_bytes).unwrap_or(usize::MAX),
    };
    let grace = Duration::try_from_secs_f64(args.shutdown_timeout)
        .context("--shutdown-timeout must be a non-negative number of seconds")?;
    let server = tokio::spawn(tessera_server::serve(
        listener,
        state,
        tessera_server::shutdown_signal(),
        grace,
    ));
    tracing::info!("listening on http://{addr} (loading the model; /ready says 503 until done)");

    let engine_args = args.engine.clone();
    let serving = tokio::task::spawn_blocking(move || engine_setup::start(&engine_args))
        .await
        .context("the model loader panicked")??;
    let name = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| default_name(args.engine.model.as_deref(), &serving.model_path));
    let text = Arc::new(ModelText::new(
        serving.tokenizer.clone(),
        serving.chat_template.clone(),
    ));
    let max_len = serving.engine.max_len();
    registry.add(ServedModel::new(name.clone(), serving.engine, text))?;
    registry.set_ready(true);
    log_ready(
        &name,
        &serving.model_path,
        serving.backend,
        serving.kv_tokens,
        max_len,
        addr,
    );

    server.await.context("the server task panicked")??;
    tracing::info!("shut down");
    Ok(())
}

fn log_ready(
    name: &str,
    path: &Path,
    backend: &str,
    kv_tokens: usize,
    max_len: usize,
    addr: SocketAddr,
) {
    // On stderr whatever RUST_LOG says: scripts and tests wait for this line.
    eprintln!(
        "tessera: serving '{name}' ({}) on backend {backend}; KV pool {kv_tokens} tokens; \
         max sequence {max_len} tokens; ready at http://{addr}/v1",
        path.display()
    );
}

/// The served name when none is given: a hub repo id as is, else the file or
/// directory name (without `.gguf`).
fn default_name(arg: Option<&str>, path: &Path) -> String {
    if let Some(arg) = arg {
        if !Path::new(arg).exists() {
            return arg.to_string();
        }
    }
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    file.strip_suffix(".gguf")
        .map(str::to_string)
        .unwrap_or(file)
}

#[cfg(test)]
mod tests {
    use super::default_name;
    use std::path::Path;

    #[test]
    fn names_default_to_the_repo_id_or_the_file_stem() {
        assert_eq!(
            default_name(None, Path::new("models/SmolLM2-135M-Instruct.Q4_1.gguf")),
            "SmolLM2-135M-Instruct.Q4_1"
        );
        assert_eq!(
            default_name(Some("Org/Model-1B"), Path::new("/cache/x/snapshots/abc")),
            "Org/Model-1B"
        );
        assert_eq!(
            default_name(Some("."), Path::new("/m/my-model")),
            "my-model"
        );
    }
}
