//! `tessera serve`: the OpenAI-compatible HTTP server over the models of a
//! [`ModelManager`]: one (`--model`), those of the config file's
//! `[[models]]` tables, or a model repository (`--model-repository`).
//!
//! The settings are checked, the device opened and the socket bound first,
//! so a bad option fails at once and `/health` answers (and `/ready` says
//! 503) while the models load; then the server turns ready.

pub mod args;
pub mod models;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tessera_manager::{ManagerSettings, ModelSpec, Repository};
use tessera_server::{AppState, ModelManager};

pub use args::ServeArgs;

use crate::model_path;
use models::ServerLoader;

/// Runs the server until SIGINT or SIGTERM; `config_models` are the config
/// file's `[[models]]`.
pub fn run(args: ServeArgs, config_models: Vec<ModelSpec>) -> Result<()> {
    // Before the connection cap is sized from it (ServeArgs::server_config).
    let fds = crate::fd_limit::raise_to_hard();
    tracing::debug!("open-file limit: {fds}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tessera-http")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args, config_models))
}

async fn serve(args: ServeArgs, config_models: Vec<ModelSpec>) -> Result<()> {
    let mut config = args.server_config()?;
    config.drift.baselines.extend(models::drift_baselines(
        args.model_repository.as_deref(),
        &config_models,
    )?);
    models::check_sources(
        args.model_repository.is_some(),
        args.engine.model.is_some(),
        config_models.len(),
    )?;
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
    let manager = build_manager(&args)?;
    let backend = manager_backend(&args);
    let state = AppState::new(manager.clone(), config)?;
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(tessera_server::serve(
        listener,
        tls,
        state.clone(),
        tessera_server::shutdown_signal(),
        grace,
    ));
    tracing::info!(
        "listening on {scheme}://{addr} (loading the models; /ready says 503 until done)"
    );

    load_at_start(&args, &manager, config_models).await?;
    state.set_ready(true);
    if let Some(every) = args.repository_poll_interval {
        manager.start_polling(every);
    }
    log_ready(&manager, backend, &format!("{scheme}://{addr}"));

    server.await.context("the server task panicked")??;
    tracing::info!("shut down");
    Ok(())
}

/// The device and compute pool opened, the memory budget set, and the
/// manager over them (and over the repository, when there is one).
fn build_manager(args: &ServeArgs) -> Result<Arc<ModelManager>> {
    let compute = args.engine.open_compute()?;
    let settings = ManagerSettings {
        memory_budget: args.engine.memory_budget(&compute)?,
        max_loaded_models: args
            .max_loaded_models
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        keep_alive: args.keep_alive,
        autoload: !args.no_autoload,
    };
    let loader = Box::new(ServerLoader::new(compute, args.engine.options()));
    Ok(match &args.model_repository {
        Some(dir) => {
            let repository = Repository::open(dir).context("invalid setting 'model-repository'")?;
            ModelManager::with_repository(loader, settings, repository)
        }
        None => ModelManager::new(loader, settings),
    })
}

fn manager_backend(args: &ServeArgs) -> String {
    args.engine.device.to_string()
}

/// Loads what is served from the start: the repository's models by their
/// version policies, the config file's models, or `--model` (whose failure
/// stops start-up). A repository or config model that fails to load is
/// reported `failed` and the others serve.
async fn load_at_start(
    args: &ServeArgs,
    manager: &Arc<ModelManager>,
    config_models: Vec<ModelSpec>,
) -> Result<()> {
    if args.model_repository.is_some() {
        let synced = manager.clone();
        let problems = tokio::task::spawn_blocking(move || synced.sync_repository())
            .await
            .context("reading the model repository panicked")??;
        for p in problems {
            tracing::warn!("model repository: {p}");
        }
        if manager.model_names().is_empty() {
            tracing::warn!("the model repository holds no model yet");
        }
    } else if config_models.is_empty() {
        let model = args.engine.model.clone();
        let path = tokio::task::spawn_blocking(move || model_path::resolve(model.as_deref()))
            .await
            .context("resolving the model panicked")??;
        let name = args
            .served_model_name
            .clone()
            .unwrap_or_else(|| default_name(args.engine.model.as_deref(), &path));
        manager.add_model(models::single(&name, path));
        let wait = manager.load(&name, Some(1))?;
        wait.wait()
            .await
            .map_err(|e| anyhow::anyhow!("loading {name}: {e}"))?;
        return Ok(());
    } else {
        for spec in config_models {
            manager.add_model(spec);
        }
    }
    for name in manager.model_names() {
        match manager.load(&name, None) {
            Ok(wait) => {
                if let Err(e) = wait.wait().await {
                    tracing::warn!(model = %name, "{e}; its other versions serve");
                }
            }
            Err(e) => tracing::warn!(model = %name, "{e}"),
        }
    }
    Ok(())
}

fn log_ready(manager: &ModelManager, device: String, url: &str) {
    let ready: Vec<String> = manager
        .versions()
        .iter()
        .filter(|v| v.state == tessera_manager::ModelState::Ready)
        .map(|v| {
            format!(
                "'{}:{}' (max sequence {} tokens, {:.1} MiB)",
                v.name,
                v.version,
                v.max_model_len.unwrap_or(0),
                v.resident_bytes as f64 / (1024.0 * 1024.0)
            )
        })
        .collect();
    let (budget, used) = manager.memory();
    // On stderr whatever RUST_LOG says: scripts and tests wait for this line.
    eprintln!(
        "tessera: serving {} on device {device}; memory budget {:.1} MiB, {:.1} MiB reserved; ready at {url}/v1",
        if ready.is_empty() { "no model yet".to_string() } else { ready.join(", ") },
        budget as f64 / (1024.0 * 1024.0),
        used as f64 / (1024.0 * 1024.0),
    );
}

/// The served name when none is given: a hub repo id as is, else the file or
/// directory name (without `.gguf`).
pub(crate) fn default_name(arg: Option<&str>, path: &Path) -> String {
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
