//! Logs on stderr through `tracing`: aligned text for people, or one JSON
//! object per line (`--log-format json`) for log pipelines. `RUST_LOG`
//! filters either.

use tracing_subscriber::EnvFilter;

use crate::serve::args::LogFormat;

/// What is logged when `RUST_LOG` says nothing: our crates at info (request
/// lines included), the rest at warn.
const DEFAULT_FILTER: &str = "warn,tessera=info,tessera_server=info";

/// Installs the global subscriber.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_FILTER.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}
