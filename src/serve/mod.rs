//! `tessera serve`: the OpenAI-compatible HTTP server over one model.
//!
//! The settings are checked and the socket bound first, so a bad option fails
//! at once and `/health` answers (and `/ready` says 503) while the model
//! loads; then the model is registered and the server turns ready.

pub mod args;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tessera_server::{AppState, ModelRegistry, ServedModel};

pub use args::ServeArgs;

use crate::engine_setup;
use crate::text_model::ModelText;

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
    let config = args.server_config()?;
    let grace = Duration::try_from_secs_f64(args.shutdown_timeout)
        .context("invalid setting 'shutdown-timeout': must be a non-negative number of seconds")?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            tessera_server::load_acceptor(cert, key)
                .context("invalid setting 'tls-cert' / 'tls-key'")?,
        ),
        (None, None) => None,
        // clap enforces the pair on the command line; a config file or the
        // environment can still give one alone, which must not mean plain HTTP.
        _ => anyhow::bail!("invalid setting 'tls-cert' / 'tls-key': give both or neither"),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let registry = Arc::new(ModelRegistry::new());
    let state = AppState::new(registry.clone(), config)?;
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(tessera_server::serve(
        listener,
        tls,
        state,
        tessera_server::shutdown_signal(),
        grace,
    ));
    tracing::info!(
        "listening on {scheme}://{addr} (loading the model; /ready says 503 until done)"
    );

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
        &format!("{scheme}://{addr}"),
    );

    server.await.context("the server task panicked")??;
    tracing::info!("shut down");
    Ok(())
}

fn log_ready(name: &str, path: &Path, backend: &str, kv_tokens: usize, max_len: usize, url: &str) {
    // On stderr whatever RUST_LOG says: scripts and tests wait for this line.
    eprintln!(
        "tessera: serving '{name}' ({}) on backend {backend}; KV pool {kv_tokens} tokens; \
         max sequence {max_len} tokens; ready at {url}/v1",
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
