//! The `tessera bench` command line. Every option either takes effect or is
//! an error: options that do nothing for the chosen dataset or schedule are
//! rejected (see [`BenchArgs::check`]) rather than silently ignored.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::client::Api;
use crate::error::{BenchError, Result};
use crate::slo::{parse_duration, Slo};
use crate::sweep::{parse_rate, Sweep};
use crate::workload::{Dataset, RandomSpec};

/// `tessera bench`: a benchmark run, or `tessera bench compare`.
#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BenchCommand {
    /// `compare`, instead of running a benchmark.
    #[command(subcommand)]
    pub subcommand: Option<BenchSubcommand>,
    /// The benchmark's options.
    #[command(flatten)]
    pub args: BenchArgs,
}

/// Subcommands of `tessera bench`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchSubcommand {
    /// Print the tables of several `--json` reports side by side and plot
    /// their sweeps together.
    Compare(CompareArgs),
}

/// `tessera bench compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Reports written by `tessera bench --json`; each report's --label names its curve.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
    /// Write the latency-vs-throughput plot of all of them to this PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// Which dataset prompts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DatasetKind {
    /// Random prompts of exact token lengths (--input-len, --output-len, --range-ratio, --prefix-len).
    Random,
    /// --dataset-path: JSONL, one {"prompt": "...", "output_len": N} per line (output_len optional).
    Jsonl,
    /// --dataset-path: ShareGPT JSON; first turn as prompt, the reply's length as output length.
    Sharegpt,
}

/// A request rate: a number per second or `inf` (`None`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(pub Option<f64>);

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_rate(s).map(Rate)
    }
}

fn usage<T>(message: String) -> Result<T> {
    Err(BenchError::Usage(message))
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s, "s")?;
    if d.is_zero() {
        return Err("the timeout must be positive".into());
    }
    Ok(d)
}

fn parse_json_object(s: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str(s) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("expected a JSON object, e.g. '{\"top_k\": 1}'".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// The options of a benchmark run.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The server's root URL, e.g. http://127.0.0.1:8000 (a trailing /v1 is accepted).
    #[arg(long, required = true)]
    pub base_url: Option<String>,
    /// The model name sent in requests [default: the first of GET /v1/models].
    #[arg(long)]
    pub model: Option<String>,
    /// The API: streaming /v1/completions or /v1/chat/completions.
    #[arg(long, value_enum, default_value = "completions")]
    pub api: Api,
    /// Another path for the API's endpoint, e.g. /openai/v1/completions.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Sent as `Authorization: Bearer KEY` (also to /tokenize and /v1/models).
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Where prompts come from.
    #[arg(long, value_enum, default_value = "random")]
    pub dataset: DatasetKind,
    /// The JSONL or ShareGPT file.
    #[arg(long)]
    pub dataset_path: Option<PathBuf>,
    /// A tokenizer.json for token counts [default: the server's /tokenize and /detokenize].
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Measured requests per run (per sweep point).
    #[arg(long, default_value_t = 100)]
    pub num_prompts: usize,
    /// Random prompts: prompt tokens [default: 128].
    #[arg(long)]
    pub input_len: Option<usize>,
    /// Random prompts: output tokens; JSONL: for lines without output_len [default: 128].
    #[arg(long)]
    pub output_len: Option<usize>,
    /// Random prompts: lengths drawn uniformly from len*(1-r) to len*(1+r), r in [0, 1) [default: 0].
    #[arg(long)]
    pub range_ratio: Option<f64>,
    /// Random prompts: tokens of a random prefix shared by every prompt [default: 0].
    #[arg(long)]
    pub prefix_len: Option<usize>,
    /// ShareGPT: output tokens for every request instead of each reply's length.
    #[arg(long)]
    pub sharegpt_output_len: Option<usize>,
    /// JSONL and ShareGPT: take prompts in file order instead of a seeded shuffle.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Send `ignore_eos: true` so outputs have their exact length [default: true for
    /// random prompts, false for files]; `--ignore-eos false` for servers without it.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub ignore_eos: Option<bool>,
    /// Sampling temperature sent with every request.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// A JSON object merged into every request body last, e.g. '{"top_k": 1}'.
    #[arg(long, value_parser = parse_json_object)]
    pub extra_body: Option<Map<String, Value>>,
    /// Seed of prompts, lengths and arrivals: the same seed sends the same requests.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Mean arrivals per second, or inf to send everything at once.
    #[arg(long, default_value = "inf")]
    pub request_rate: Rate,
    /// Gamma shape of arrival gaps at a finite rate: 1 is Poisson, <1 burstier [default: 1].
    #[arg(long)]
    pub burstiness: Option<f64>,
    /// Most requests in flight; later arrivals wait for a slot [default: no cap].
    #[arg(long)]
    pub max_concurrency: Option<usize>,
    /// Runs over several settings: concurrency=1,2,4,8 or rate=1,2,4,inf.
    #[arg(long)]
    pub sweep: Option<Sweep>,
    /// Unmeasured requests sent before each run (its own prompts, at its concurrency).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Longest a request may take, stream included (e.g. 600s, 90s, 500ms).
    #[arg(long, value_parser = parse_timeout, default_value = "600s")]
    pub timeout: Duration,
    /// Goodput objectives, e.g. ttft=200ms,tpot=50ms (also e2el=2s).
    #[arg(long)]
    pub slo: Option<Slo>,

    /// Write every request record and the summaries to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write latency percentiles against throughput to this PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// The server's name in tables, plots and the JSON [default: host:port].
    #[arg(long)]
    pub label: Option<String>,
    /// No progress bar (there is none anyway when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

impl BenchArgs {
    /// The dataset the options describe; an error for any option that would
    /// have no effect with it, or for an impossible combination.
    pub fn check(&self) -> Result<Dataset> {
        if self.num_prompts == 0 {
            return usage("--num-prompts must be at least 1".into());
        }
        let finite_rate = self.request_rate.0.is_some()
            || matches!(&self.sweep, Some(Sweep::Rate(rs)) if rs.iter().any(Option::is_some));
        if self.burstiness.is_some() && !finite_rate {
            return usage("--burstiness shapes arrivals at a finite --request-rate; at inf all arrive at once".into());
        }
        match &self.sweep {
            Some(Sweep::Concurrency(_)) if self.max_concurrency.is_some() => {
                return usage("--sweep concurrency=... replaces --max-concurrency; give one".into())
            }
            Some(Sweep::Rate(_)) if self.request_rate.0.is_some() => {
                return usage("--sweep rate=... replaces --request-rate; give one".into())
            }
            _ => {}
        }
        if self.max_concurrency == Some(0) {
            return usage("--max-concurrency must be at least 1".into());
        }
        let random_only = [
            ("--input-len", self.input_len.is_some()),
            ("--range-ratio", self.range_ratio.is_some()),
            ("--prefix-len", self.prefix_len.is_some()),
        ];
        let not_for = |what: &str, opts: &[(&str, bool)]| -> Result<()> {
            match opts.iter().find(|(_, given)| *given) {
                Some((name, _)) => usage(format!("{name} does not apply to --dataset {what}")),
                None => Ok(()),
            }
        };
        let path = || {
            self.dataset_path
                .clone()
                .ok_or_else(|| BenchError::Usage("this --dataset needs --dataset-path".into()))
        };
        Ok(match self.dataset {
            DatasetKind::Random => {
                not_for(
                    "random",
                    &[
                        ("--dataset-path", self.dataset_path.is_some()),
                        ("--sharegpt-output-len", self.sharegpt_output_len.is_some()),
                        ("--no-shuffle", self.no_shuffle),
                    ],
                )?;
                Dataset::Random(RandomSpec {
                    input_len: self.input_len.unwrap_or(128),
                    output_len: self.output_len.unwrap_or(128),
                    range_ratio: self.range_ratio.unwrap_or(0.0),
                    prefix_len: self.prefix_len.unwrap_or(0),
                })
            }
            DatasetKind::Jsonl => {
                not_for("jsonl", &random_only)?;
                not_for(
                    "jsonl",
                    &[("--sharegpt-output-len", self.sharegpt_output_len.is_some())],
                )?;
                Dataset::Jsonl {
                    path: path()?,
                    output_len: self.output_len.unwrap_or(128),
                    no_shuffle: self.no_shuffle,
                }
            }
            DatasetKind::Sharegpt => {
                not_for("sharegpt", &random_only)?;
                not_for(
                    "sharegpt (use --sharegpt-output-len)",
                    &[("--output-len", self.output_len.is_some())],
                )?;
                Dataset::ShareGpt {
                    path: path()?,
                    output_len: self.sharegpt_output_len,
                    no_shuffle: self.no_shuffle,
                }
            }
        })
    }

    /// Whether to send `ignore_eos`: as given, else for random prompts only.
    pub fn ignore_eos(&self) -> bool {
        self.ignore_eos
            .unwrap_or(self.dataset == DatasetKind::Random)
    }

    /// The server's root URL: without a trailing `/` or `/v1`.
    pub fn root_url(&self) -> Result<String> {
        let url = self
            .base_url
            .as_deref()
            .ok_or_else(|| BenchError::Usage("--base-url is required".into()))?
            .trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(BenchError::Usage(format!(
                "--base-url must start with http:// or https://, not '{url}'"
            )));
        }
        Ok(url.strip_suffix("/v1").unwrap_or(url).to_string())
    }
}
