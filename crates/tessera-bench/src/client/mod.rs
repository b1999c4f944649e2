//! One streamed request to an OpenAI-compatible server, timed from the
//! client: the body, the HTTP exchange, and the stream read chunk by chunk.
//! Every way it can go wrong ends in a [`Failure`], never an error or a panic.

mod sse;
mod stream;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

pub use sse::SseParser;
use stream::{clip, StreamState};

use crate::error::{BenchError, Result};
use crate::record::{Failure, FailureKind, TokenSource};
use crate::workload::WorkItem;

/// Which OpenAI API the requests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `POST /v1/completions` with the prompt as text.
    Completions,
    /// `POST /v1/chat/completions` with the prompt as one user message.
    Chat,
}

impl Api {
    /// The endpoint's path under the server's root.
    pub fn default_path(self) -> &'static str {
        match self {
            Api::Completions => "/v1/completions",
            Api::Chat => "/v1/chat/completions",
        }
    }
}

/// Where and how every request of a benchmark is sent.
#[derive(Debug, Clone)]
pub struct Target {
    /// The endpoint's full URL.
    pub url: String,
    /// Its API.
    pub api: Api,
    /// `model` in every body.
    pub model: String,
    /// Sent as `Authorization: Bearer`.
    pub api_key: Option<String>,
    /// Longest a request may take, stream included.
    pub timeout: Duration,
    /// Send `ignore_eos: true` (not sent at all when false, so servers without
    /// the extension accept the body).
    pub ignore_eos: bool,
    /// `temperature` in every body.
    pub temperature: f64,
    /// Fields merged into every body last (they override the above).
    pub extra_body: Map<String, Value>,
}

impl Target {
    /// The JSON body for `item`.
    pub fn body(&self, item: &WorkItem) -> Value {
        let mut body = json!({
            "model": self.model,
            "max_tokens": item.output_len,
            "temperature": self.temperature,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let map = body.as_object_mut().expect("a JSON object literal");
        match self.api {
            Api::Completions => map.insert("prompt".into(), item.prompt.clone().into()),
            Api::Chat => map.insert(
                "messages".into(),
                json!([{"role": "user", "content": item.prompt}]),
            ),
        };
        if self.ignore_eos {
            map.insert("ignore_eos".into(), true.into());
        }
        for (k, v) in &self.extra_body {
            map.insert(k.clone(), v.clone());
        }
        body
    }
}

/// The HTTP client for a benchmark: no proxy from the environment (a proxy in
/// the path would be measured too), no Nagle delay, and a connection pool
/// large enough that every in-flight request keeps its connection.
pub fn http_client(max_idle: usize) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(max_idle)
        .build()
        .map_err(|e| BenchError::Usage(format!("cannot build the HTTP client: {e}")))
}

/// What one request did, timed from when it was sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Time to the first content chunk, seconds.
    pub ttft_s: Option<f64>,
    /// Time to `[DONE]` (or to the failure), seconds.
    pub latency_s: f64,
    /// Gaps between content chunks, seconds.
    pub itl_s: Vec<f64>,
    /// Output tokens.
    pub output_tokens: usize,
    /// Where `output_tokens` came from.
    pub output_tokens_source: TokenSource,
    /// The server's prompt token count, when it sent usage.
    pub prompt_tokens: Option<usize>,
    /// The last `finish_reason` seen.
    pub finish_reason: Option<String>,
    /// The generated text.
    pub text: String,
    /// Why it failed, if it did.
    pub error: Option<Failure>,
    /// Times it was sent again because the server had closed the kept-alive
    /// connection it went out on, unanswered.
    pub resends: usize,
}

/// Sends `body` to `target` and reads the stream to its end.
pub async fn send(client: &reqwest::Client, target: &Target, body: &Value) -> Outcome {
    let start = Instant::now();
    let mut state = StreamState::new(target.api, start);
    read(client, target, body, &mut state).await;
    let end = state.done.unwrap_or_else(Instant::now);
    let (output_tokens, output_tokens_source) = match state.completion_tokens {
        Some(n) => (n, TokenSource::Usage),
        None => (state.content_chunks, TokenSource::Chunks),
    };
    Outcome {
        ttft_s: state.first.map(|t| state.since_start(t)),
        latency_s: state.since_start(end),
        itl_s: state.itl,
        output_tokens,
        output_tokens_source,
        prompt_tokens: state.prompt_tokens,
        finish_reason: state.finish_reason,
        text: state.text,
        error: state.error,
        resends: state.resends,
    }
}

/// Most resends of a request whose kept-alive connection the server had
/// closed: every pooled connection may be one of them.
const MAX_RESENDS: usize = 4;

async fn read(client: &reqwest::Client, target: &Target, body: &Value, state: &mut StreamState) {
    let body = body.to_string();
    let mut response = loop {
        let mut request = client
            .post(&target.url)
            .timeout(target.timeout)
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .body(body.clone());
        if let Some(key) = &target.api_key {
            request = request.bearer_auth(key);
        }
        match request.send().await {
            Ok(r) => break r,
            // Some servers (llama-server) close the connection after every
            // stream without saying so; a request sent on it the instant
            // before the close is seen gets no answer at all. Nothing was
            // served, so it is sent again (counted in the record), as HTTP
            // clients do for requests lost to a keep-alive race.
            Err(e) if state.resends < MAX_RESENDS && closed_before_answering(&e) => {
                state.resends += 1;
            }
            Err(e) => return state.fail(kind_of(&e, FailureKind::Connect), error_chain(&e)),
        }
    };
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return state.fail(
            FailureKind::Http,
            format!("HTTP {status}: {}", clip(text.trim())),
        );
    }
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !content_type.starts_with("text/event-stream") {
        let text = response.text().await.unwrap_or_default();
        return state.fail(
            FailureKind::Protocol,
            format!(
                "expected text/event-stream, got '{content_type}': {}",
                clip(&text)
            ),
        );
    }
    let mut parser = SseParser::new();
    while !state.finished() {
        match response.chunk().await {
            Ok(Some(bytes)) => {
                // Timed on arrival, before any parsing.
                let at = Instant::now();
                for data in parser.push(&bytes) {
                    state.on_event(&data, at);
                }
            }
            Ok(None) => {
                let cut = if parser.pending() { " (mid-event)" } else { "" };
                return state.fail(
                    FailureKind::Truncated,
                    format!("the stream ended without [DONE]{cut}"),
                );
            }
            Err(e) => return state.fail(kind_of(&e, FailureKind::Truncated), error_chain(&e)),
        }
    }
    if state.done.is_some() {
        // Read the body's end after [DONE] (already timed), briefly, so the
        // connection goes back to the pool instead of being dropped mid-body:
        // that is how a client keeps its connections alive.
        let drain = async { while let Ok(Some(_)) = response.chunk().await {} };
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
    }
}

/// Longest wait for the end of a body after `[DONE]`.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// Whether an established connection was closed (or reset) before any byte
/// of a response: not a refused connection, not a timeout.
fn closed_before_answering(e: &reqwest::Error) -> bool {
    if e.is_timeout() || e.is_connect() {
        return false;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return true;
        }
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionReset)
        {
            return true;
        }
        source = s.source();
    }
    false
}

fn kind_of(e: &reqwest::Error, otherwise: FailureKind) -> FailureKind {
    if e.is_timeout() {
        FailureKind::Timeout
    } else {
        otherwise
    }
}

/// The error with its sources ("error sending request: connection refused").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Sends a side request (model listing, tokenizer) with the API key, bounded
/// to a minute so a hung server cannot hang the benchmark, and returns the
/// body of a 2xx answer; the error is a message for the caller to place.
pub(crate) async fn fetch_text(
    request: reqwest::RequestBuilder,
    api_key: Option<&str>,
) -> std::result::Result<String, String> {
    let mut request = request.timeout(Duration::from_secs(60));
    if let Some(key) = api_key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("HTTP {status}: {}", text.trim()));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(api: Api) -> Target {
        Target {
            url: "http://x/v1/completions".into(),
            api,
            model: "m".into(),
            api_key: None,
            timeout: Duration::from_secs(1),
            ignore_eos: true,
            temperature: 0.0,
            extra_body: Map::new(),
        }
    }

    #[test]
    fn bodies_ask_for_a_stream_with_usage() {
        let item = WorkItem {
            prompt: "hi".into(),
            prompt_len: 1,
            output_len: 8,
        };
        let b = target(Api::Completions).body(&item);
        assert_eq!(b["prompt"], "hi");
        assert_eq!(b["max_tokens"], 8);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["ignore_eos"], true);
        let mut chat = target(Api::Chat);
        chat.ignore_eos = false;
        chat.extra_body.insert("top_k".into(), 1.into());
        chat.extra_body.insert("temperature".into(), 0.5.into());
        let b = chat.body(&item);
        assert_eq!(b["messages"][0]["content"], "hi");
        assert!(b.get("ignore_eos").is_none() && b.get("prompt").is_none());
        assert_eq!(
            (b["top_k"].clone(), b["temperature"].clone()),
            (1.into(), 0.5.into())
        );
    }
}
