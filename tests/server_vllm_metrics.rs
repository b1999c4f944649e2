//! `/metrics` under load carries vLLM's names for the engine gauges
//! (`vllm:num_requests_waiting`, `vllm:num_requests_running`,
//! `vllm:kv_cache_usage_perc`, `vllm:gpu_cache_usage_perc`, labelled
//! `model_name`), each equal to its tessera gauge in the same scrape, which
//! is what Gateway API inference routers and autoscalers read; with the
//! option off they are gone.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{post, request, MODEL};
use serde_json::json;
use tessera_server::ServerConfig;

/// Each vLLM name and the tessera gauge it aliases.
const ALIASES: &[(&str, &str)] = &[
    ("vllm:num_requests_waiting", "tessera_requests_waiting"),
    ("vllm:num_requests_running", "tessera_requests_running"),
    ("vllm:kv_cache_usage_perc", "tessera_kv_cache_usage_ratio"),
    ("vllm:gpu_cache_usage_perc", "tessera_kv_cache_usage_ratio"),
];

/// A sample's labels, as `(name, value)` pairs.
type Labels = Vec<(String, String)>;

/// One scrape: sample values by `name` and `(label, value)` pairs, and the
/// `# TYPE` of each family. Written here because the Rust parser the other
/// metrics tests use does not take the colons in vLLM's names.
struct Scrape {
    samples: HashMap<String, Vec<(Labels, f64)>>,
    types: HashMap<String, String>,
}

fn parse(text: &str) -> Scrape {
    let mut samples: HashMap<_, Vec<_>> = HashMap::new();
    let mut types = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').expect("label=value");
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        let value: f64 = value.parse().expect("a number");
        samples
            .entry(name.to_string())
            .or_default()
            .push((labels, value));
    }
    Scrape { samples, types }
}

impl Scrape {
    /// The value of `name` for the test model, whose label is `label`.
    fn value(&self, name: &str, label: &str) -> f64 {
        let found: Vec<f64> = self.samples.get(name).map_or(vec![], |s| {
            s.iter()
                .filter(|(labels, _)| labels.contains(&(label.to_string(), MODEL.to_string())))
                .map(|(_, v)| *v)
                .collect()
        });
        assert_eq!(found.len(), 1, "{name}{{{label}=\"{MODEL}\"}}: {found:?}");
        found[0]
    }
}

fn scrape(addr: SocketAddr) -> (String, Scrape) {
    let r = request(addr, "GET", "/metrics", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let parsed = parse(&text);
    (text, parsed)
}

/// Starts the default model with room for two running sequences, so that
/// more concurrent requests queue.
fn server(config: ServerConfig) -> SocketAddr {
    let models = common::models();
    let mut args = common::engine_args("64MiB", 64);
    args.max_num_seqs = 2;
    common::register(&models, MODEL, &args);
    common::serve_with(models, config, None)
}

#[test]
fn vllm_names_equal_tesseras_gauges_under_load() {
    let addr = server(ServerConfig::default());
    let clients: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                let r = post(
                    addr,
                    "/v1/completions",
                    &json!({"prompt": format!("Count to {i}:"), "max_tokens": 48,
                            "ignore_eos": true, "temperature": 0}),
                );
                assert_eq!(r.status, 200, "{}", r.text());
            })
        })
        .collect();

    // Scrape until one catches requests both running and waiting: then every
    // alias must hold its gauge's value from that same scrape.
    let deadline = Instant::now() + Duration::from_secs(120);
    let loaded = loop {
        let (text, s) = scrape(addr);
        if s.value("tessera_requests_waiting", "model") > 0.0
            && s.value("tessera_requests_running", "model") > 0.0
        {
            break (text, s);
        }
        assert!(
            Instant::now() < deadline,
            "no scrape saw requests waiting and running:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let (text, s) = loaded;
    for (theirs, ours) in ALIASES {
        assert_eq!(
            s.value(theirs, "model_name"),
            s.value(ours, "model"),
            "{theirs} vs {ours}:\n{text}"
        );
        assert_eq!(s.types.get(*theirs).map(String::as_str), Some("gauge"));
        assert!(
            text.contains(&format!("# HELP {theirs} ")),
            "{theirs} has help"
        );
    }
    let running = s.value("vllm:num_requests_running", "model_name");
    assert!(
        (1.0..=2.0).contains(&running),
        "--max-num-seqs 2: {running}"
    );
    assert!(s.value("vllm:num_requests_waiting", "model_name") >= 1.0);
    let kv = s.value("vllm:kv_cache_usage_perc", "model_name");
    assert!(kv > 0.0 && kv <= 1.0, "a fraction, not a percentage: {kv}");
    for c in clients {
        c.join().expect("client");
    }
    // Idle again: the aliases follow the gauges back to zero.
    common::wait_for("the aliases to read idle", Duration::from_secs(30), || {
        let (_, s) = scrape(addr);
        ALIASES
            .iter()
            .all(|(theirs, _)| s.value(theirs, "model_name") == 0.0)
    });
}

#[test]
fn no_vllm_metrics_leaves_only_tesseras_names() {
    let addr = server(ServerConfig {
        vllm_metrics: false,
        ..ServerConfig::default()
    });
    let (text, s) = scrape(addr);
    assert!(!text.contains("vllm:"), "{text}");
    assert_eq!(s.value("tessera_requests_waiting", "model"), 0.0);
}
