//! What a streamed response's events mean for the measurements: content
//! chunks time TTFT and ITL, the usage chunk counts tokens, `[DONE]` ends a
//! complete stream, an error object fails it.

use std::time::Instant;

use serde_json::Value;

use super::Api;
use crate::record::{Failure, FailureKind};

/// The measurements of one stream so far.
#[derive(Debug)]
pub(crate) struct StreamState {
    api: Api,
    start: Instant,
    pub first: Option<Instant>,
    last: Option<Instant>,
    pub itl: Vec<f64>,
    pub content_chunks: usize,
    pub text: String,
    pub completion_tokens: Option<usize>,
    pub prompt_tokens: Option<usize>,
    pub finish_reason: Option<String>,
    /// When `[DONE]` arrived.
    pub done: Option<Instant>,
    pub error: Option<Failure>,
    /// Resends after the server closed a kept-alive connection unanswered.
    pub resends: usize,
}

impl StreamState {
    /// A stream of `api` chunks for a request sent at `start`.
    pub fn new(api: Api, start: Instant) -> Self {
        Self {
            api,
            start,
            first: None,
            last: None,
            itl: Vec::new(),
            content_chunks: 0,
            text: String::new(),
            completion_tokens: None,
            prompt_tokens: None,
            finish_reason: None,
            done: None,
            error: None,
            resends: 0,
        }
    }

    /// Whether nothing more is to be read: `[DONE]` or an error.
    pub fn finished(&self) -> bool {
        self.done.is_some() || self.error.is_some()
    }

    /// Seconds from the request to `t`.
    pub fn since_start(&self, t: Instant) -> f64 {
        t.duration_since(self.start).as_secs_f64()
    }

    /// Takes one event's data, which arrived at `at`.
    pub fn on_event(&mut self, data: &str, at: Instant) {
        if self.finished() {
            return;
        }
        if data.trim() == "[DONE]" {
            self.done = Some(at);
            return;
        }
        let chunk: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => {
                return self.fail(
                    FailureKind::Protocol,
                    format!("chunk is not JSON ({e}): {}", clip(data)),
                )
            }
        };
        if let Some(err) = chunk.get("error") {
            return self.fail(FailureKind::StreamError, clip(&err.to_string()));
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            let count = |k: &str| usage.get(k).and_then(Value::as_u64).map(|n| n as usize);
            self.completion_tokens = count("completion_tokens").or(self.completion_tokens);
            self.prompt_tokens = count("prompt_tokens").or(self.prompt_tokens);
        }
        let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else {
            return; // the usage chunk has no choices
        };
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
        }
        let content = self.content(choice);
        if content.is_empty() {
            return; // role-only and finish chunks carry no token
        }
        match self.last {
            None => self.first = Some(at),
            Some(last) => self.itl.push(at.duration_since(last).as_secs_f64()),
        }
        self.last = Some(at);
        self.content_chunks += 1;
        self.text.push_str(&content);
    }

    /// The generated text in a choice: `text` for completions; for chat the
    /// delta's `content`, and its reasoning text (vLLM's `reasoning_content`,
    /// llama.cpp's `reasoning_content`, OpenRouter-style `reasoning`), which
    /// are output tokens too.
    fn content(&self, choice: &Value) -> String {
        let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        match self.api {
            Api::Completions => field(choice, "text"),
            Api::Chat => {
                let delta = choice.get("delta").unwrap_or(&Value::Null);
                let mut s = field(delta, "reasoning_content");
                s.push_str(&field(delta, "reasoning"));
                s.push_str(&field(delta, "content"));
                s
            }
        }
    }

    /// Marks the stream failed.
    pub fn fail(&mut self, kind: FailureKind, message: String) {
        if self.error.is_none() {
            self.error = Some(Failure { kind, message });
        }
    }
}

/// At most 500 characters of `s`, for error messages.
pub(crate) fn clip(s: &str) -> String {
    match s.char_indices().nth(500) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn chat_chunks_time_content_and_take_usage() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut s = StreamState::new(Api::Chat, t0);
        s.on_event(
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}"#,
            ms(5),
        );
        assert!(s.first.is_none(), "a role chunk is not a token");
        s.on_event(r#"{"choices":[{"delta":{"content":"Hel"}}]}"#, ms(100));
        s.on_event(
            r#"{"choices":[{"delta":{"reasoning_content":"hmm"}}]}"#,
            ms(130),
        );
        s.on_event(
            r#"{"choices":[{"delta":{"content":"lo"},"finish_reason":"length"}]}"#,
            ms(180),
        );
        s.on_event(
            r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}"#,
            ms(181),
        );
        assert!(!s.finished());
        s.on_event("[DONE]", ms(182));
        assert!(s.finished() && s.error.is_none());
        assert_eq!(s.since_start(s.first.unwrap()), 0.1);
        let itl: Vec<u128> = s.itl.iter().map(|x| (x * 1000.0).round() as u128).collect();
        assert_eq!(itl, [30, 50]);
        assert_eq!(s.content_chunks, 3);
        assert_eq!(s.text, "Helhmmlo");
        assert_eq!((s.prompt_tokens, s.completion_tokens), (Some(7), Some(3)));
        assert_eq!(s.finish_reason.as_deref(), Some("length"));
    }

    #[test]
    fn errors_and_garbage_fail_the_stream() {
        let t0 = Instant::now();
        let mut s = StreamState::new(Api::Completions, t0);
        s.on_event(r#"{"choices":[{"text":"a"}]}"#, t0);
        s.on_event(r#"{"error":{"message":"engine died"}}"#, t0);
        assert_eq!(
            s.error.as_ref().map(|e| e.kind),
            Some(FailureKind::StreamError)
        );
        assert!(s.error.as_ref().unwrap().message.contains("engine died"));
        let mut g = StreamState::new(Api::Completions, t0);
        g.on_event("not json", t0);
        assert_eq!(g.error.map(|e| e.kind), Some(FailureKind::Protocol));
    }
}
