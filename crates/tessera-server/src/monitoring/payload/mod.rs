//! Payload logging: each inference request and response as an event, sent
//! to sinks (a rotated JSON-lines file, an HTTP endpoint receiving
//! CloudEvents 1.0 in binary mode as KServe's logger sends them). Delivery is
//! off the serving path: each sink has a bounded queue and a thread of its
//! own; a full queue drops the event and counts it, so a slow or dead sink
//! never slows or fails a request.

mod file;
pub(crate) mod hook;
mod http;
mod time;

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

use prometheus::{IntCounterVec, Opts, Registry};
use serde::Serialize;
use serde_json::Value;

/// The CloudEvents type of a request event (KServe's).
pub const REQUEST_TYPE: &str = "org.kubeflow.serving.inference.request";
/// The CloudEvents type of a response event (KServe's).
pub const RESPONSE_TYPE: &str = "org.kubeflow.serving.inference.response";

/// Where events go.
#[derive(Debug, Clone, PartialEq)]
pub enum Sink {
    /// JSON lines appended to this file, rotated by size.
    File(PathBuf),
    /// CloudEvents POSTed to this `http://` or `https://` URL.
    Http(String),
}

impl Sink {
    /// Parses `file:PATH` or `http[s]://HOST[:PORT][/PATH]`.
    pub fn parse(spec: &str) -> Result<Sink, String> {
        if let Some(path) = spec.strip_prefix("file:") {
            if path.is_empty() {
                return Err("file: needs a path, e.g. file:/var/log/tessera/payload.jsonl".into());
            }
            return Ok(Sink::File(PathBuf::from(path)));
        }
        if spec.starts_with("http://") || spec.starts_with("https://") {
            http::Target::parse(spec)?;
            return Ok(Sink::Http(spec.to_string()));
        }
        Err(format!(
            "'{spec}' is not a sink: expected file:PATH or http[s]://HOST[:PORT]/PATH"
        ))
    }

    /// Its name in metrics (an URL's credentials left out).
    fn label(&self) -> String {
        match self {
            Sink::File(p) => format!("file:{}", p.display()),
            Sink::Http(url) => http::Target::parse(url).map_or_else(|_| url.clone(), |t| t.label()),
        }
    }
}

/// Which events are logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Requests and responses.
    #[default]
    All,
    /// Requests only.
    Request,
    /// Responses only.
    Response,
}

impl Mode {
    /// Parses `all`, `request` or `response`.
    pub fn parse(s: &str) -> Result<Mode, String> {
        match s {
            "all" => Ok(Mode::All),
            "request" => Ok(Mode::Request),
            "response" => Ok(Mode::Response),
            _ => Err(format!("'{s}' is not a mode: all, request or response")),
        }
    }
}

/// Payload logging settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadLogConfig {
    /// The sinks; none: payload logging is off.
    pub sinks: Vec<Sink>,
    /// Which events.
    pub mode: Mode,
    /// Share of requests logged (both events of a request, or neither).
    pub sample_rate: f64,
    /// Replace message content (prompts, messages, completions) by its
    /// SHA-256.
    pub hash_content: bool,
    /// Events each sink may hold before new ones are dropped.
    pub queue_size: usize,
    /// A file sink's size at which it is rotated.
    pub max_file_bytes: u64,
    /// Rotated files kept (`PATH.1` newest).
    pub max_files: usize,
    /// The CloudEvents `source`.
    pub source: String,
}

impl Default for PayloadLogConfig {
    fn default() -> Self {
        Self {
            sinks: Vec::new(),
            mode: Mode::All,
            sample_rate: 1.0,
            hash_content: false,
            queue_size: 1024,
            max_file_bytes: 100 << 20,
            max_files: 10,
            source: "tessera".into(),
        }
    }
}

/// One request's or response's event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    /// The request id (CloudEvents `id`; request and response share it).
    pub id: String,
    /// [`REQUEST_TYPE`] or [`RESPONSE_TYPE`].
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The CloudEvents `source`.
    pub source: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// The model's name ("" when the request never reached one).
    pub model: String,
    /// Its version (0 when none).
    pub version: u64,
    /// The route, e.g. `/v1/chat/completions`.
    pub endpoint: String,
    /// The HTTP status (responses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The body: JSON when it parses, else text.
    pub body: Value,
}

/// The sinks' queues and the drop counter.
pub struct PayloadLogger {
    config: PayloadLogConfig,
    queues: Vec<(String, SyncSender<Event>)>,
    dropped: IntCounterVec,
    delivered: IntCounterVec,
}

impl PayloadLogger {
    /// Starts one thread per sink; counters go into `registry`. `None` when
    /// no sink is configured.
    pub fn start(
        config: PayloadLogConfig,
        registry: &Registry,
    ) -> Result<Option<Self>, prometheus::Error> {
        if config.sinks.is_empty() {
            return Ok(None);
        }
        let counter = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<_> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let dropped = counter(
            "payload_log_dropped_total",
            "Payload events dropped: queue_full (the sink is behind) or delivery_failed (after retries).",
            &["sink", "reason"],
        )?;
        let delivered = counter(
            "payload_log_events_total",
            "Payload events written to or accepted by their sink.",
            &["sink"],
        )?;
        let mut queues = Vec::new();
        for sink in &config.sinks {
            let label = sink.label();
            let (tx, rx) = sync_channel::<Event>(config.queue_size);
            let (ok, failed) = (
                delivered.with_label_values(&[&label]),
                dropped.with_label_values(&[&label, "delivery_failed"]),
            );
            let name = format!("tessera-payload-{}", queues.len());
            let spawned = match sink {
                Sink::File(path) => {
                    let w =
                        file::Rotating::new(path.clone(), config.max_file_bytes, config.max_files);
                    std::thread::Builder::new()
                        .name(name)
                        .spawn(move || file::run(w, rx, ok, failed))
                }
                Sink::Http(url) => {
                    let target = http::Target::parse(url).map_err(prometheus::Error::Msg)?;
                    let tls = if target.is_tls() {
                        let extra = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
                        let client = http::tls_client(extra.as_deref())
                            .map_err(|e| prometheus::Error::Msg(format!("{label}: {e}")))?;
                        Some(client)
                    } else {
                        None
                    };
                    std::thread::Builder::new()
                        .name(name)
                        .spawn(move || http::run(target, tls, rx, ok, failed))
                }
            };
            spawned.map_err(|e| prometheus::Error::Msg(format!("payload sink thread: {e}")))?;
            queues.push((label, tx));
        }
        Ok(Some(Self {
            config,
            queues,
            dropped,
            delivered,
        }))
    }

    /// The settings.
    pub fn config(&self) -> &PayloadLogConfig {
        &self.config
    }

    /// Whether request `id` is in the sample.
    pub fn sampled(&self, id: &str) -> bool {
        let rate = self.config.sample_rate;
        if rate >= 1.0 {
            return true;
        }
        // FNV-1a of the id: the same answer for its request and response.
        let h = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        (h >> 11) as f64 / (1u64 << 53) as f64 <= rate
    }

    /// Queues `event` on every sink, never waiting: a full queue drops it.
    pub fn send(&self, event: Event) {
        let wanted = match self.config.mode {
            Mode::All => true,
            Mode::Request => event.kind == REQUEST_TYPE,
            Mode::Response => event.kind == RESPONSE_TYPE,
        };
        if !wanted {
            return;
        }
        for (label, tx) in &self.queues {
            match tx.try_send(event.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.dropped.with_label_values(&[label, "queue_full"]).inc();
                }
            }
        }
    }

    /// Events delivered by sink `label` so far (tests).
    pub fn delivered(&self, label: &str) -> u64 {
        self.delivered.with_label_values(&[label]).get()
    }
}

/// `body` with every `content`, `text` and `prompt` string replaced by
/// `sha256:HEX`, so logs can be joined and compared without holding users'
/// words.
pub fn hash_content(body: &mut Value) {
    match body {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                let is_content = matches!(key.as_str(), "content" | "text" | "prompt");
                match value {
                    Value::String(s) if is_content => *s = sha256(s),
                    Value::Array(items) if is_content => {
                        for item in items.iter_mut() {
                            match item {
                                Value::String(s) => *s = sha256(s),
                                other => hash_content(other),
                            }
                        }
                    }
                    other => hash_content(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(hash_content),
        _ => {}
    }
}

fn sha256(s: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
