//! The model lifecycle on the default model: time from `load` to servable,
//! the memory an idle loaded model holds, and time to first token during a
//! swap against steady state under the same load.
//!
//! `cargo bench --bench lifecycle -- [clients=8] [seconds=30]`
//!
//! `cargo test --all-targets` also runs this file (without `--bench`): then it
//! does a short smoke run so the code stays working.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tessera::engine_setup::Compute;
use tessera::serve::models::ServerLoader;
use tessera_manager::{KeepAlive, ManagerSettings, ModelState, Repository, Target};
use tessera_server::{AppState, ModelManager, ServerConfig};

fn main() -> anyhow::Result<()> {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| a.parse().ok())
        .collect();
    let clients = args
        .first()
        .copied()
        .unwrap_or(if benchmarking { 8 } else { 2 }) as usize;
    let seconds = args
        .get(1)
        .copied()
        .unwrap_or(if benchmarking { 30 } else { 2 });
    let loads = if benchmarking { 5 } else { 1 };

    let dir = tempfile::tempdir()?;
    for version in [1, 2] {
        let v = dir.path().join("m").join(version.to_string());
        std::fs::create_dir_all(&v)?;
        std::fs::hard_link(common::DEFAULT_MODEL, v.join("model.gguf"))
            .or_else(|_| std::fs::copy(common::DEFAULT_MODEL, v.join("model.gguf")).map(|_| ()))?;
    }
    std::fs::write(
        dir.path().join("m/model.toml"),
        "version_policy = { specific = [1] }\naliases = { prod = 1 }\ndefault = \"prod\"\n\
         kv-cache-memory = \"256MiB\"\nmax-model-len = 2048\n",
    )?;
    let rss_start = rss_bytes();
    let models = manager(dir.path());
    models.sync_repository()?;
    models
        .load("m", Some(1))?
        .wait_blocking()
        .map_err(anyhow::Error::msg)?;
    println!(
        "model {} | {clients} clients, {seconds}s | threads {}",
        common::DEFAULT_MODEL,
        rayon::current_num_threads()
    );
    let resident = models.versions()[0].resident_bytes;
    println!(
        "idle loaded model (KV cache 256 MiB, f16): RSS {:.1} MiB over the process before it; planned {:.1} MiB",
        mib(rss_bytes().saturating_sub(rss_start)),
        mib(resident)
    );

    let mut times = Vec::new();
    for _ in 0..loads {
        let _ = models.unload("m", Some(1))?;
        wait_state(&models, 1, ModelState::Unavailable);
        let started = Instant::now();
        models
            .load("m", Some(1))?
            .wait_blocking()
            .map_err(anyhow::Error::msg)?;
        times.push(started.elapsed().as_secs_f64());
    }
    println!(
        "load -> servable: median {:.3}s of {:?}",
        median(&mut times.clone()),
        times.iter().map(|t| format!("{t:.3}")).collect::<Vec<_>>()
    );

    let state = AppState::new(models.clone(), ServerConfig::default())?;
    state.set_ready(true);
    let addr = common::serve_state(state, None);
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(Instant, f64)>>> = Arc::default();
    let workers: Vec<_> = (0..clients)
        .map(|i| {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let ttft = first_token(addr, i, n);
                    seen.lock().expect("lock").push((started, ttft));
                    n += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds / 2));
    let swap_sent = Instant::now();
    block_on(models.set_alias("m", "prod", Target::version(2), None))?;
    let swap_done = Instant::now();
    let _ = models.unload("m", Some(1))?;
    std::thread::sleep(Duration::from_secs(seconds / 2));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().map_err(|_| anyhow::anyhow!("a client panicked"))?;
    }
    let seen = seen.lock().expect("lock");
    let mut steady: Vec<f64> = seen
        .iter()
        .filter(|(t, _)| *t < swap_sent)
        .map(|(_, x)| *x)
        .collect();
    let mut swapping: Vec<f64> = seen
        .iter()
        .filter(|(t, _)| *t >= swap_sent && *t <= swap_done + Duration::from_secs(1))
        .map(|(_, x)| *x)
        .collect();
    println!(
        "swap (version 2 loaded and warmed, alias moved, version 1 drained): {:.3}s",
        (swap_done - swap_sent).as_secs_f64()
    );
    for (what, v) in [("steady", &mut steady), ("during the swap", &mut swapping)] {
        println!(
            "TTFT {what}: {} requests, p50 {:.1} ms, p99 {:.1} ms",
            v.len(),
            percentile(v, 0.5) * 1e3,
            percentile(v, 0.99) * 1e3
        );
    }
    Ok(())
}

fn manager(root: &Path) -> Arc<ModelManager> {
    let loader = ServerLoader::new(
        Compute::cpu(),
        common::engine_args("256MiB", 4096).options(),
    );
    let settings = ManagerSettings {
        memory_budget: 8 << 30,
        max_loaded_models: None,
        keep_alive: KeepAlive::Forever,
        autoload: true,
    };
    let repository = Repository::open(root).expect("repository");
    ModelManager::with_repository(Box::new(loader), settings, repository)
}

/// Seconds to the first streamed token of a fresh prompt (distinct per
/// client and request, so no prefix cache helps).
fn first_token(addr: std::net::SocketAddr, client: usize, n: usize) -> f64 {
    let prompt =
        format!("Request {n} of client {client}: write a short story about the sea and the wind.");
    let body = json!({"model": "m", "prompt": prompt, "max_tokens": 16, "ignore_eos": true,
                      "temperature": 0, "stream": true});
    let started = Instant::now();
    let mut reader = common::send_with(
        addr,
        "POST",
        "/v1/completions",
        &[],
        body.to_string().as_bytes(),
    );
    let (status, _) = common::read_head(&mut reader);
    assert_eq!(status, 200);
    let mut ttft = None;
    while let Some(chunk) = common::read_chunk(&mut reader) {
        if ttft.is_none() && chunk.windows(7).any(|w| w == b"\"text\":") {
            ttft = Some(started.elapsed().as_secs_f64());
        }
    }
    ttft.expect("a token")
}

fn wait_state(models: &ModelManager, version: u64, state: ModelState) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !models
        .versions()
        .iter()
        .any(|v| v.version == version && v.state == state)
    {
        assert!(
            Instant::now() < deadline,
            "version {version} never became {state}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i]
}

fn median(v: &mut [f64]) -> f64 {
    percentile(v, 0.5)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The process's resident memory (`VmRSS`).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}
