//! The options of `tessera serve`. Each is a flag, a `TESSERA_*` environment
//! variable and a key of the `--config` file (the flag's name without `--`);
//! a flag beats the environment, which beats the file, which beats the default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::builder::BoolishValueParser;
use tessera_server::conn_limit::ConnectionLimits;
use tessera_server::{Limits, RateLimitConfig, ServerConfig, MAX_N};

use crate::engine_setup::EngineArgs;
use tessera_manager::units::{parse_bytes, parse_duration};
use tessera_manager::KeepAlive;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: one aligned line per event.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Arguments of `tessera serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// TOML file of options: keys are these flags' names without `--`
    /// (`max-num-seqs = 32`); flags and TESSERA_* variables override it
    /// [default: none].
    #[arg(long, env = "TESSERA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective options (secrets redacted), each with where it
    /// came from, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// The name clients use in `model` [default: the --model argument, or
    /// the file name of the default model without `.gguf`].
    #[arg(long, env = "TESSERA_SERVED_MODEL_NAME")]
    pub served_model_name: Option<String>,
    /// Serve the models of this directory instead of --model: DIR/<name>/<version>/
    /// holds a GGUF file or a Hugging Face model directory, DIR/<name>/model.toml
    /// the model's settings [default: none].
    #[arg(
        long,
        env = "TESSERA_MODEL_REPOSITORY",
        value_name = "DIR",
        conflicts_with = "served_model_name"
    )]
    pub model_repository: Option<PathBuf>,
    /// Re-read the model repository this often, e.g. `30s`: new versions are
    /// loaded and warmed before the ones they replace leave [default: never].
    #[arg(long, env = "TESSERA_REPOSITORY_POLL_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub repository_poll_interval: Option<Duration>,
    /// Most model versions loaded at once; loading another evicts the least
    /// recently used idle one [default: as many as the memory budget holds].
    #[arg(long, env = "TESSERA_MAX_LOADED_MODELS", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_loaded_models: Option<u64>,
    /// How long an idle model stays loaded, e.g. `10m`; `0` unloads it when
    /// its requests end, a negative value (`-1`) never [default: -1]. A
    /// model's `keep_alive` in model.toml and a request's `keep_alive` win.
    #[arg(long, env = "TESSERA_KEEP_ALIVE", value_parser = KeepAlive::parse, default_value = "-1", allow_hyphen_values = true)]
    pub keep_alive: KeepAlive,
    /// Answer 503 for a model in the repository that is not loaded, instead
    /// of loading it for the request [default: off, models load on demand].
    #[arg(long, env = "TESSERA_NO_AUTOLOAD", value_parser = BoolishValueParser::new(), default_value_t = false)]
    pub no_autoload: bool,
    /// A key that opens the management API (/v2/repository/...) as
    /// `Authorization: Bearer KEY`; repeat for several. TESSERA_ADMIN_API_KEYS
    /// takes a comma-separated list [default: none, the management API is off].
    #[arg(
        long = "admin-api-key",
        env = "TESSERA_ADMIN_API_KEYS",
        value_delimiter = ',',
        value_name = "KEY"
    )]
    pub admin_api_keys: Vec<String>,
    /// File of admin keys, one per line [default: none].
    #[arg(long, env = "TESSERA_ADMIN_API_KEY_FILE", value_name = "FILE")]
    pub admin_api_key_file: Option<PathBuf>,
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, env = "TESSERA_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed at start-up).
    #[arg(long, env = "TESSERA_PORT", default_value_t = 8000)]
    pub port: u16,
    /// Largest request body, e.g. `8MiB` (larger ones get 413).
    #[arg(long, env = "TESSERA_MAX_REQUEST_BYTES", value_parser = parse_bytes, default_value = "8MiB")]
    pub max_request_bytes: u64,
    /// Seconds in-flight requests may run on after SIGTERM/SIGINT.
    #[arg(long, env = "TESSERA_SHUTDOWN_TIMEOUT", default_value_t = 30.0)]
    pub shutdown_timeout: f64,
    /// Log format.
    #[arg(long, env = "TESSERA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log request and response bodies (API keys redacted); they are never
    /// logged otherwise [default: off].
    #[arg(long, env = "TESSERA_LOG_REQUESTS", value_parser = BoolishValueParser::new(), default_value_t = false)]
    pub log_requests: bool,
    /// An API key clients must send as `Authorization: Bearer KEY`; repeat
    /// for several. TESSERA_API_KEYS takes a comma-separated list. Prefer it
    /// or --api-key-file: command lines are visible to other users
    /// [default: none; with no key at all, the API is open].
    #[arg(
        long = "api-key",
        env = "TESSERA_API_KEYS",
        value_delimiter = ',',
        value_name = "KEY"
    )]
    pub api_keys: Vec<String>,
    /// File of API keys, one per line (blank lines and `#` comments skipped)
    /// [default: none].
    #[arg(long, env = "TESSERA_API_KEY_FILE", value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Key for GET /metrics (`Authorization: Bearer KEY`) [default: none;
    /// /metrics is open]. API keys do not open it.
    #[arg(long, env = "TESSERA_METRICS_KEY", value_name = "KEY")]
    pub metrics_key: Option<String>,
    /// Requests per --rate-limit-window per API key (per client address
    /// without keys); beyond it 429 with Retry-After [default: no limit].
    #[arg(long, env = "TESSERA_RATE_LIMIT_REQUESTS", value_name = "N")]
    pub rate_limit_requests: Option<u64>,
    /// Prompt plus completion tokens per --rate-limit-window per API key; a
    /// request reserves its prompt and n x max_tokens, unused tokens come
    /// back [default: no limit].
    #[arg(long, env = "TESSERA_RATE_LIMIT_TOKENS", value_name = "N")]
    pub rate_limit_tokens: Option<u64>,
    /// The window of the rate limits, e.g. `60s`, `1m`, `500ms`; budgets
    /// refill continuously over it.
    #[arg(long, env = "TESSERA_RATE_LIMIT_WINDOW", value_parser = parse_duration, default_value = "60s")]
    pub rate_limit_window: Duration,
    /// Most tokens in one prompt; longer ones get 400 [default: the model's
    /// context].
    #[arg(long, env = "TESSERA_MAX_PROMPT_TOKENS", value_name = "N")]
    pub max_prompt_tokens: Option<usize>,
    /// Most samples per prompt (`n`).
    #[arg(long, env = "TESSERA_MAX_N", default_value_t = MAX_N)]
    pub max_n: usize,
    /// Largest `max_tokens` a request may ask for (400 beyond); it also caps
    /// the default [default: the context left after the prompt].
    #[arg(long, env = "TESSERA_MAX_OUTPUT_TOKENS", value_name = "N")]
    pub max_output_tokens: Option<usize>,
    /// Most streamed responses one API key (or client address) may have open
    /// at once; beyond it 429 [default: no limit].
    #[arg(long, env = "TESSERA_MAX_STREAMS_PER_KEY", value_name = "N")]
    pub max_streams_per_key: Option<usize>,
    /// Longest a request may run, e.g. `10m`: a whole response gets 504, a
    /// stream ends with an error event [default: no limit].
    #[arg(long, env = "TESSERA_REQUEST_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub request_timeout: Option<Duration>,
    /// Longest a new connection may take to send its first request header,
    /// e.g. `10s`; slower ones are closed.
    #[arg(long, env = "TESSERA_HEADER_READ_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub header_read_timeout: Duration,
    /// Longest a connection may stay open with no request in flight (HTTP
    /// keep-alive, HTTP/2), e.g. `60s`; then it is closed. Not the model's
    /// --keep-alive.
    #[arg(long, env = "TESSERA_CONNECTION_IDLE_TIMEOUT", value_parser = parse_duration, default_value = "60s")]
    pub connection_idle_timeout: Duration,
    /// Most connections open at once; beyond it a new connection gets 503
    /// and is closed [default: the file-descriptor limit less a reserve].
    #[arg(long, env = "TESSERA_MAX_CONNECTIONS", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Most connections open at once from one client address; beyond it 503.
    #[arg(long, env = "TESSERA_MAX_CONNECTIONS_PER_CLIENT", value_parser = clap::value_parser!(u64).range(1..), default_value_t = 1024)]
    pub max_connections_per_client: u64,
    /// TLS certificate chain (PEM); serves HTTPS with --tls-key [default:
    /// none, plain HTTP].
    #[arg(
        long,
        env = "TESSERA_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for --tls-cert [default: none].
    #[arg(
        long,
        env = "TESSERA_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub tls_key: Option<PathBuf>,
    /// Origins browsers may call the API from (CORS), e.g.
    /// `https://app.example.com`, or `*`; repeat or separate with commas
    /// [default: none, CORS off].
    #[arg(
        long,
        env = "TESSERA_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub allowed_origins: Vec<String>,
    /// Do not also export the engine's gauges under vLLM's names
    /// (`vllm:num_requests_waiting`, `vllm:num_requests_running`,
    /// `vllm:kv_cache_usage_perc`, `vllm:gpu_cache_usage_perc`), which
    /// Gateway API inference routers and autoscalers read [default: off].
    #[arg(long, env = "TESSERA_NO_VLLM_METRICS", value_parser = BoolishValueParser::new(), default_value_t = false)]
    pub no_vllm_metrics: bool,
    /// Track drift per model version (GET /v1/monitoring/drift, the
    /// tessera_drift_* gauges).
    #[arg(long, env = "TESSERA_DRIFT", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, default_value_t = true, value_name = "BOOL")]
    pub drift: bool,
    /// Requests after a version goes live that make its drift reference.
    #[arg(long, env = "TESSERA_DRIFT_REFERENCE_SIZE", default_value_t = 200)]
    pub drift_reference_size: usize,
    /// Latest requests in the current window compared with the reference.
    #[arg(long, env = "TESSERA_DRIFT_WINDOW_SIZE", default_value_t = 200)]
    pub drift_window_size: usize,
    /// Also limit the current window to the last T (e.g. `1h`) [default:
    /// none, the last --drift-window-size requests].
    #[arg(long, env = "TESSERA_DRIFT_WINDOW", value_parser = parse_duration, value_name = "DURATION")]
    pub drift_window: Option<Duration>,
    /// PSI at or above which a signal may have drifted.
    #[arg(long, env = "TESSERA_DRIFT_PSI_THRESHOLD", default_value_t = 0.25)]
    pub drift_psi_threshold: f64,
    /// Test p-value (KS, chi-squared) below which a move is significant.
    #[arg(long, env = "TESSERA_DRIFT_P_VALUE_THRESHOLD", default_value_t = 0.05)]
    pub drift_p_value_threshold: f64,
    /// A drift reference made by `tessera drift baseline`: versions of its
    /// model start with it instead of their first requests; repeat for
    /// several models [default: none].
    #[arg(
        long,
        env = "TESSERA_DRIFT_BASELINE",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub drift_baseline: Vec<PathBuf>,
    /// Log inference requests and responses to a sink: `file:PATH` (JSON
    /// lines, rotated by size) or `http[s]://HOST[:PORT]/PATH` (CloudEvents
    /// 1.0, binary mode; https trusts the built-in roots and SSL_CERT_FILE);
    /// repeat or separate with commas [default: none].
    #[arg(
        long,
        env = "TESSERA_PAYLOAD_LOG",
        value_delimiter = ',',
        value_name = "SINK"
    )]
    pub payload_log: Vec<String>,
    /// Which payload events: all, request or response.
    #[arg(long, env = "TESSERA_PAYLOAD_LOG_MODE", default_value = "all")]
    pub payload_log_mode: String,
    /// Share of requests whose payloads are logged.
    #[arg(long, env = "TESSERA_PAYLOAD_LOG_SAMPLE_RATE", default_value_t = 1.0)]
    pub payload_log_sample_rate: f64,
    /// Replace message content in payload events by its SHA-256.
    #[arg(long, env = "TESSERA_PAYLOAD_LOG_HASH_CONTENT", value_parser = BoolishValueParser::new(), default_value_t = false)]
    pub payload_log_hash_content: bool,
    /// Events a sink may have waiting before new ones are dropped (counted
    /// in tessera_payload_log_dropped_total).
    #[arg(long, env = "TESSERA_PAYLOAD_LOG_QUEUE_SIZE", default_value_t = 1024)]
    pub payload_log_queue_size: usize,
    /// Size at which a file sink is rotated (PATH.1, PATH.2, ... ten kept).
    #[arg(long, env = "TESSERA_PAYLOAD_LOG_MAX_FILE_BYTES", value_parser = parse_bytes, default_value = "100MiB")]
    pub payload_log_max_file_bytes: u64,
    /// Where uploaded files and batch jobs are kept (SQLite and file
    /// contents) [default: $XDG_DATA_HOME/tessera, else
    /// ~/.local/share/tessera].
    #[arg(long, env = "TESSERA_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Largest file upload (POST /v1/files); larger ones get 413.
    #[arg(long, env = "TESSERA_MAX_FILE_BYTES", value_parser = parse_bytes, default_value = "200MiB")]
    pub max_file_bytes: u64,
    /// How long a batch may run before it ends `expired` (finished lines
    /// kept). Batches ask for OpenAI's "24h" window; a shorter value here
    /// is for tests and small deployments.
    #[arg(long, env = "TESSERA_BATCH_WINDOW", value_parser = parse_duration, default_value = "24h")]
    pub batch_window: Duration,
    /// Batch lines in flight at once (the engine's --batch-max-running
    /// decides how many of them run).
    #[arg(long, env = "TESSERA_BATCH_CONCURRENCY", value_parser = clap::value_parser!(u64).range(1..), default_value_t = 8)]
    pub batch_concurrency: u64,
}

impl ServeArgs {
    /// The payload logging settings, each sink checked.
    fn payload_log_config(&self) -> Result<tessera_server::monitoring::PayloadLogConfig> {
        use tessera_server::monitoring::payload::{Mode, Sink};
        let sinks = self
            .payload_log
            .iter()
            .map(|s| Sink::parse(s).map_err(|e| anyhow::anyhow!("--payload-log: {e}")))
            .collect::<Result<Vec<_>>>()?;
        let mode = Mode::parse(&self.payload_log_mode)
            .map_err(|e| anyhow::anyhow!("--payload-log-mode: {e}"))?;
        Ok(tessera_server::monitoring::PayloadLogConfig {
            sinks,
            mode,
            sample_rate: self.payload_log_sample_rate,
            hash_content: self.payload_log_hash_content,
            queue_size: self.payload_log_queue_size,
            max_file_bytes: self.payload_log_max_file_bytes,
            ..Default::default()
        })
    }

    /// The batch settings: the data directory given, or the default one.
    fn batch_config(&self) -> tessera_server::batch::BatchConfig {
        let default_dir = || {
            std::env::var_os("XDG_DATA_HOME")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
                .map(|d| d.join("tessera"))
        };
        tessera_server::batch::BatchConfig {
            data_dir: self.data_dir.clone().or_else(default_dir),
            data_dir_is_default: self.data_dir.is_none(),
            max_file_bytes: self.max_file_bytes,
            window: self.batch_window,
            concurrency: usize::try_from(self.batch_concurrency).unwrap_or(usize::MAX),
        }
    }

    /// The server's settings; reads the key file. Errors name the option.
    pub fn server_config(&self) -> Result<ServerConfig> {
        let mut api_keys = self.api_keys.clone();
        if let Some(path) = &self.api_key_file {
            api_keys.extend(read_key_file(path, "api-key-file")?);
        }
        let mut admin_api_keys = self.admin_api_keys.clone();
        if let Some(path) = &self.admin_api_key_file {
            admin_api_keys.extend(read_key_file(path, "admin-api-key-file")?);
        }
        let config = ServerConfig {
            max_body_bytes: usize::try_from(self.max_request_bytes).unwrap_or(usize::MAX),
            api_keys,
            metrics_key: self.metrics_key.clone(),
            admin_api_keys,
            rate_limit: RateLimitConfig {
                requests: self.rate_limit_requests,
                tokens: self.rate_limit_tokens,
                window: self.rate_limit_window,
            },
            limits: Limits {
                max_prompt_tokens: self.max_prompt_tokens,
                max_n: self.max_n,
                max_output_tokens: self.max_output_tokens,
                max_streams_per_key: self.max_streams_per_key,
                request_timeout: self.request_timeout,
            },
            log_requests: self.log_requests,
            allowed_origins: self.allowed_origins.clone(),
            vllm_metrics: !self.no_vllm_metrics,
            drift: tessera_server::monitoring::DriftConfig {
                enabled: self.drift,
                reference_size: self.drift_reference_size,
                window_size: self.drift_window_size,
                window_duration: self.drift_window,
                psi_threshold: self.drift_psi_threshold,
                p_value_threshold: self.drift_p_value_threshold,
                baselines: self
                    .drift_baseline
                    .iter()
                    .map(|p| tessera_server::monitoring::Baseline::load(p))
                    .collect::<Result<_, _>>()
                    .context("--drift-baseline")?,
            },
            payload_log: self.payload_log_config()?,
            connections: ConnectionLimits {
                max_connections: self
                    .max_connections
                    .map_or_else(default_max_connections, |n| {
                        usize::try_from(n).unwrap_or(usize::MAX)
                    }),
                max_per_client: usize::try_from(self.max_connections_per_client)
                    .unwrap_or(usize::MAX),
                header_read_timeout: self.header_read_timeout,
                idle_timeout: self.connection_idle_timeout,
            },
            batch: self.batch_config(),
        };
        config.validate()?;
        Ok(config)
    }
}

/// Keys from a file: one per line, `#` comments and blank lines skipped. A
/// file without keys is an error: it would leave the server open.
fn read_key_file(path: &Path, option: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("invalid setting '{option}': cannot read {}", path.display()))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if keys.is_empty() {
        bail!(
            "invalid setting '{option}': {} holds no key",
            path.display()
        );
    }
    Ok(keys)
}

/// The connection cap when none is given: the process's open-file limit less
/// a reserve for model files, logs and the engine (each connection holds one
/// descriptor). Read from /proc on Linux; elsewhere a conservative 1024.
fn default_max_connections() -> usize {
    const RESERVE: usize = 128;
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<usize>().ok()
        })
        .unwrap_or(1024);
    limit.saturating_sub(RESERVE).max(64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn vllm_metrics_are_on_unless_turned_off() {
        use clap::Parser;
        let config = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["serve"], args].concat()).expect("parses");
            cli.serve.server_config().expect("valid")
        };
        assert!(config(&[]).vllm_metrics);
        assert!(!config(&["--no-vllm-metrics"]).vllm_metrics);
    }

    #[test]
    fn key_files_skip_comments_and_must_hold_a_key() {
        let dir = std::env::temp_dir().join(format!("tessera-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("keys");
        std::fs::write(&file, "# team a\nsk-a\n\n  sk-b  \n").expect("write");
        assert_eq!(
            read_key_file(&file, "api-key-file").expect("keys"),
            ["sk-a", "sk-b"]
        );
        std::fs::write(&file, "# nothing\n").expect("write");
        let e = read_key_file(&file, "api-key-file").expect_err("empty");
        assert!(e.to_string().contains("api-key-file"), "{e}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
