//! `tessera bench`: the whole benchmark, from options to tables, JSON and
//! plot; and `tessera bench compare`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::cli::{BenchArgs, BenchCommand, BenchSubcommand, CompareArgs};
use crate::client::{fetch_text, http_client, Api, Target};
use crate::error::{BenchError, Result};
use crate::report::{self, BenchReport, PointReport, RunConfig};
use crate::runner::{run_point, RunSettings};
use crate::summary::Summary;
use crate::sweep::points;
use crate::tokenizer::Tokenizer;
use crate::workload::{self, Dataset};

/// Runs `tessera bench` (or its `compare` subcommand).
pub fn run(command: BenchCommand) -> Result<()> {
    match command.subcommand {
        Some(BenchSubcommand::Compare(args)) => compare(&args),
        None => run_benchmark(command.args).map(|_| ()),
    }
}

/// Runs a benchmark, prints its tables, writes `--json` and `--plot`, and
/// returns the report. Client work runs on one thread: it must take as
/// little CPU from a server on the same machine as it can.
pub fn run_benchmark(args: BenchArgs) -> Result<BenchReport> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::Usage(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(benchmark(args))
}

/// `tessera bench compare`: the reports' tables side by side, one plot.
pub fn compare(args: &CompareArgs) -> Result<()> {
    let reports = args
        .reports
        .iter()
        .map(|p| BenchReport::read(p))
        .collect::<Result<Vec<_>>>()?;
    print_tables(&reports);
    if let Some(path) = &args.plot {
        report::plot(&reports, path)?;
        eprintln!("plot: {}", path.display());
    }
    Ok(())
}

async fn benchmark(args: BenchArgs) -> Result<BenchReport> {
    let dataset = args.check()?;
    let root = args.root_url()?;
    let runs = points(
        args.sweep.as_ref(),
        args.max_concurrency,
        args.request_rate.0,
    );
    let widest = runs
        .iter()
        .filter_map(|p| p.max_concurrency)
        .max()
        .unwrap_or(args.num_prompts);
    let client = http_client(widest.max(args.warmup))?;
    let model = match &args.model {
        Some(m) => m.clone(),
        None => first_model(&client, &root, args.api_key.as_deref()).await?,
    };
    let tokenizer = match &args.tokenizer {
        Some(path) => Tokenizer::from_file(path)?,
        None => Tokenizer::remote(client.clone(), &root, &model, args.api_key.clone()).await?,
    };
    // One workload for the whole invocation, built before anything is
    // measured: each run gets its own prompts (warm-up ones included), so no
    // run hits a prefix cache filled by the one before.
    let per_run = args.warmup + args.num_prompts;
    eprintln!(
        "tessera bench: building {} requests ({}) with {}",
        per_run * runs.len(),
        describe(&dataset),
        tokenizer.describe()
    );
    let workload = workload::build(&dataset, &tokenizer, per_run * runs.len(), args.seed).await?;
    for note in &workload.notes {
        eprintln!("tessera bench: note: {note}");
    }
    let target = Arc::new(Target {
        url: format!(
            "{root}{}",
            args.endpoint.as_deref().unwrap_or(args.api.default_path())
        ),
        api: args.api,
        model: model.clone(),
        api_key: args.api_key.clone(),
        timeout: args.timeout,
        ignore_eos: args.ignore_eos(),
        temperature: args.temperature,
        extra_body: args.extra_body.clone().unwrap_or_default(),
    });
    let mut report = BenchReport {
        tool: "tessera bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        label: args.label.clone().unwrap_or_else(|| host_port(&root)),
        started_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        config: RunConfig {
            url: target.url.clone(),
            api: args.api,
            model,
            dataset: describe(&dataset),
            tokenizer: tokenizer.describe(),
            num_prompts: args.num_prompts,
            warmup: args.warmup,
            ignore_eos: target.ignore_eos,
            temperature: args.temperature,
            extra_body: target.extra_body.clone(),
            burstiness: args.burstiness.unwrap_or(1.0),
            seed: args.seed,
            timeout_s: args.timeout.as_secs_f64(),
            slo: args.slo,
            workload_notes: workload.notes.clone(),
        },
        points: Vec::new(),
    };
    let mut failure = None;
    for (i, (point, chunk)) in runs.iter().zip(workload.items.chunks(per_run)).enumerate() {
        let (warmup, items) = chunk.split_at(args.warmup);
        let settings = RunSettings {
            point: *point,
            burstiness: report.config.burstiness,
            seed: args.seed.wrapping_add(i as u64),
            progress: !args.no_progress,
        };
        let run = match run_point(&client, &target, warmup, items, settings).await {
            Ok(run) => run,
            Err(e) => {
                // Keep what the earlier runs measured: report it, then fail.
                eprintln!("tessera bench: {point}: stopped");
                failure = Some(e);
                break;
            }
        };
        let mut summary =
            Summary::new(&run.records, run.duration_s, run.peak_concurrency, args.slo);
        if args.api == Api::Chat {
            // The template's tokens are in the server's count by design.
            summary.prompt_len_mismatches = 0;
        }
        eprintln!(
            "tessera bench: {point}: {} completed, {} failed in {:.1}s; {:.1} output tok/s",
            summary.completed, summary.failed, summary.duration_s, summary.output_throughput
        );
        report.points.push(PointReport {
            point: *point,
            warmup_requests: run.warmup_requests,
            warmup_failures: run.warmup_failures,
            summary,
            requests: run.records,
        });
    }
    if !report.points.is_empty() {
        print_tables(std::slice::from_ref(&report));
        if let Some(path) = &args.json {
            report.write(path)?;
            eprintln!("tessera bench: JSON: {}", path.display());
        }
        if let Some(path) = &args.plot {
            report::plot(std::slice::from_ref(&report), path)?;
            eprintln!("tessera bench: plot: {}", path.display());
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

fn print_tables(reports: &[BenchReport]) {
    println!("{}", report::throughput_table(reports));
    println!("{}", report::latency_table(reports));
    let notes: Vec<String> = reports.iter().flat_map(report::notes).collect();
    for n in notes {
        println!("- {n}");
    }
}

/// The first model the server lists.
async fn first_model(
    client: &reqwest::Client,
    root: &str,
    api_key: Option<&str>,
) -> Result<String> {
    let url = format!("{root}/v1/models");
    let err = |message: String| BenchError::Server {
        url: url.clone(),
        message: format!("{message} (pass --model)"),
    };
    let text = fetch_text(client.get(&url), api_key).await.map_err(err)?;
    let listing: Value = serde_json::from_str(&text).map_err(|e| err(format!("not JSON ({e})")))?;
    let id = listing
        .pointer("/data/0/id")
        .and_then(Value::as_str)
        .ok_or_else(|| err("no model listed".into()))?;
    eprintln!("tessera bench: model '{id}' (the first of /v1/models)");
    Ok(id.to_string())
}

fn describe(dataset: &Dataset) -> String {
    match dataset {
        Dataset::Random(s) => {
            let mut d = format!(
                "random, input {} / output {} tokens",
                s.input_len, s.output_len
            );
            if s.range_ratio > 0.0 {
                d += &format!(", range ratio {}", s.range_ratio);
            }
            if s.prefix_len > 0 {
                d += &format!(", shared prefix {}", s.prefix_len);
            }
            d
        }
        Dataset::Jsonl { path, .. } => format!("jsonl {}", path.display()),
        Dataset::ShareGpt {
            path, output_len, ..
        } => match output_len {
            Some(n) => format!("sharegpt {}, output {n} tokens", path.display()),
            None => format!("sharegpt {}", path.display()),
        },
    }
}

/// `host:port` of a URL, the default label.
fn host_port(root: &str) -> String {
    let rest = root.split_once("://").map_or(root, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}
