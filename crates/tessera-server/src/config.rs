//! How a server runs: request limits, API keys, rate limits, CORS and request
//! logging. The binary fills it from flags, environment and a config file;
//! [`ServerConfig::validate`] names the option at fault when a value is wrong.

use std::time::Duration;

use axum::http::HeaderValue;

use crate::conn_limit::ConnectionLimits;
use crate::sampling::MAX_N;

/// Default limit on a request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 << 20;

/// Every setting of a server beyond its models.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted (larger ones get 413).
    pub max_body_bytes: usize,
    /// Keys accepted in `Authorization: Bearer`; empty: no authentication.
    pub api_keys: Vec<String>,
    /// When set, `GET /metrics` needs this key instead of being open.
    pub metrics_key: Option<String>,
    /// Keys that open the management API (`/v2/repository/...`); empty: it
    /// is off. Client keys never open it.
    pub admin_api_keys: Vec<String>,
    /// Per-caller request and token budgets.
    pub rate_limit: RateLimitConfig,
    /// Caps on what one request may ask for.
    pub limits: Limits,
    /// Log request and response bodies (API keys redacted).
    pub log_requests: bool,
    /// Origins allowed by CORS (`*` for any); empty: CORS off.
    pub allowed_origins: Vec<String>,
    /// Also export the engine's gauges under vLLM's metric names, which
    /// vLLM-aware routers and autoscalers read.
    pub vllm_metrics: bool,
    /// Drift tracking per model version.
    pub drift: crate::monitoring::DriftConfig,
    /// Payload logging to sinks.
    pub payload_log: crate::monitoring::PayloadLogConfig,
    /// Caps on connections and the first header's deadline.
    pub connections: ConnectionLimits,
    /// Where files and batches are kept, and how batches run.
    pub batch: crate::batch::BatchConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            api_keys: Vec::new(),
            metrics_key: None,
            admin_api_keys: Vec::new(),
            rate_limit: RateLimitConfig::default(),
            limits: Limits::default(),
            log_requests: false,
            allowed_origins: Vec::new(),
            vllm_metrics: true,
            drift: crate::monitoring::DriftConfig::default(),
            payload_log: crate::monitoring::PayloadLogConfig::default(),
            connections: ConnectionLimits::default(),
            batch: crate::batch::BatchConfig::default(),
        }
    }
}

/// Token-bucket rate limits per caller (API key, or client address without
/// keys). A bucket holds `limit` and refills continuously at `limit` per
/// `window`, so a client that used it all waits `window / limit` per request,
/// not a whole window.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    /// Requests per window.
    pub requests: Option<u64>,
    /// Prompt plus completion tokens per window (a request reserves its
    /// prompt and `n x max_tokens`, and gets back what it did not generate).
    pub tokens: Option<u64>,
    /// The window the limits are over.
    pub window: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            requests: None,
            tokens: None,
            window: Duration::from_secs(60),
        }
    }
}

/// Caps on one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Most prompt tokens (per prompt).
    pub max_prompt_tokens: Option<usize>,
    /// Most samples per prompt (`n`).
    pub max_n: usize,
    /// Largest `max_tokens` a request may ask for; also caps the default.
    pub max_output_tokens: Option<usize>,
    /// Most streamed responses one caller may have open at once.
    pub max_streams_per_key: Option<usize>,
    /// Longest a request may take, streamed or not.
    pub request_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_prompt_tokens: None,
            max_n: MAX_N,
            max_output_tokens: None,
            max_streams_per_key: None,
            request_timeout: None,
        }
    }
}

/// A setting that cannot work, named as the flag (and config key) it comes from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting '{option}': {reason}")]
pub struct ConfigError {
    /// The option, as its flag is spelled without `--`.
    pub option: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(option: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        option,
        reason: reason.into(),
    }
}

impl ServerConfig {
    /// Checks every setting, naming the first one that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes == 0 {
            return Err(invalid("max-request-bytes", "must be more than 0"));
        }
        if self.batch.max_file_bytes == 0 {
            return Err(invalid("max-file-bytes", "must be more than 0"));
        }
        if self.batch.concurrency == 0 {
            return Err(invalid("batch-concurrency", "must be more than 0"));
        }
        if self.batch.window.is_zero() {
            return Err(invalid("batch-window", "must be more than 0"));
        }
        for key in &self.api_keys {
            check_key("api-key", key)?;
        }
        if let Some(key) = &self.metrics_key {
            check_key("metrics-key", key)?;
        }
        for key in &self.admin_api_keys {
            check_key("admin-api-key", key)?;
            if self.api_keys.contains(key) {
                return Err(invalid(
                    "admin-api-key",
                    "must differ from every client key (a client key never opens the management API)",
                ));
            }
        }
        let d = &self.drift;
        if d.reference_size == 0 {
            return Err(invalid("drift-reference-size", "must be more than 0"));
        }
        if d.window_size == 0 {
            return Err(invalid("drift-window-size", "must be more than 0"));
        }
        if d.window_duration.is_some_and(|t| t.is_zero()) {
            return Err(invalid("drift-window", "must be more than 0"));
        }
        if !(d.psi_threshold.is_finite() && d.psi_threshold > 0.0) {
            return Err(invalid(
                "drift-psi-threshold",
                "must be a number more than 0",
            ));
        }
        if !(d.p_value_threshold > 0.0 && d.p_value_threshold <= 1.0) {
            return Err(invalid("drift-p-value-threshold", "must be in (0, 1]"));
        }
        let p = &self.payload_log;
        if !(0.0..=1.0).contains(&p.sample_rate) {
            return Err(invalid("payload-log-sample-rate", "must be in [0, 1]"));
        }
        if p.queue_size == 0 {
            return Err(invalid("payload-log-queue-size", "must be more than 0"));
        }
        if p.max_file_bytes == 0 {
            return Err(invalid("payload-log-max-file-bytes", "must be more than 0"));
        }
        if self.connections.header_read_timeout.is_zero() {
            return Err(invalid("header-read-timeout", "must be more than 0"));
        }
        if self.connections.idle_timeout.is_zero() {
            return Err(invalid("connection-idle-timeout", "must be more than 0"));
        }
        let r = &self.rate_limit;
        if r.requests == Some(0) {
            return Err(invalid("rate-limit-requests", "must be more than 0"));
        }
        if r.tokens == Some(0) {
            return Err(invalid("rate-limit-tokens", "must be more than 0"));
        }
        if r.window.is_zero() {
            return Err(invalid("rate-limit-window", "must be more than 0"));
        }
        let l = &self.limits;
        if !(1..=MAX_N).contains(&l.max_n) {
            return Err(invalid("max-n", format!("must be in [1, {MAX_N}]")));
        }
        let positive = [
            ("max-prompt-tokens", l.max_prompt_tokens),
            ("max-output-tokens", l.max_output_tokens),
            ("max-streams-per-key", l.max_streams_per_key),
        ];
        for (option, value) in positive {
            if value == Some(0) {
                return Err(invalid(option, "must be more than 0"));
            }
        }
        if l.request_timeout.is_some_and(|t| t.is_zero()) {
            return Err(invalid("request-timeout", "must be more than 0"));
        }
        for origin in &self.allowed_origins {
            check_origin(origin)?;
        }
        Ok(())
    }
}

/// A key must be something a client can send in a header.
fn check_key(option: &'static str, key: &str) -> Result<(), ConfigError> {
    if key.is_empty() {
        return Err(invalid(option, "an API key cannot be empty"));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            option,
            "an API key must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

/// `*`, or `scheme://host[:port]` with nothing after (browsers send exactly that).
fn check_origin(origin: &str) -> Result<(), ConfigError> {
    if origin == "*" {
        return Ok(());
    }
    let bad = |why: &str| invalid("allowed-origins", format!("'{origin}': {why}"));
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err(bad("an origin looks like https://example.com (or *)"));
    };
    if scheme.is_empty() || rest.is_empty() || rest.contains('/') {
        return Err(bad("an origin is scheme://host[:port] with no path"));
    }
    HeaderValue::from_str(origin).map_err(|_| bad("not a valid header value"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid() {
        assert_eq!(ServerConfig::default().validate(), Ok(()));
    }

    #[test]
    fn bad_settings_are_named() {
        let cases: Vec<(&str, ServerConfig)> = vec![
            (
                "api-key",
                ServerConfig {
                    api_keys: vec!["has space".into()],
                    ..Default::default()
                },
            ),
            (
                "metrics-key",
                ServerConfig {
                    metrics_key: Some(String::new()),
                    ..Default::default()
                },
            ),
            (
                "rate-limit-window",
                ServerConfig {
                    rate_limit: RateLimitConfig {
                        window: Duration::ZERO,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            ),
            (
                "connection-idle-timeout",
                ServerConfig {
                    connections: ConnectionLimits {
                        idle_timeout: Duration::ZERO,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            ),
            (
                "max-n",
                ServerConfig {
                    limits: Limits {
                        max_n: 129,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            ),
            (
                "max-streams-per-key",
                ServerConfig {
                    limits: Limits {
                        max_streams_per_key: Some(0),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            ),
            (
                "allowed-origins",
                ServerConfig {
                    allowed_origins: vec!["example.com".into()],
                    ..Default::default()
                },
            ),
        ];
        let drift = |d: crate::monitoring::DriftConfig| ServerConfig {
            drift: d,
            ..Default::default()
        };
        let payload = |p: crate::monitoring::PayloadLogConfig| ServerConfig {
            payload_log: p,
            ..Default::default()
        };
        let mut cases = cases;
        cases.extend([
            (
                "drift-reference-size",
                drift(crate::monitoring::DriftConfig {
                    reference_size: 0,
                    ..Default::default()
                }),
            ),
            (
                "drift-window",
                drift(crate::monitoring::DriftConfig {
                    window_duration: Some(Duration::ZERO),
                    ..Default::default()
                }),
            ),
            (
                "drift-psi-threshold",
                drift(crate::monitoring::DriftConfig {
                    psi_threshold: f64::NAN,
                    ..Default::default()
                }),
            ),
            (
                "drift-p-value-threshold",
                drift(crate::monitoring::DriftConfig {
                    p_value_threshold: 0.0,
                    ..Default::default()
                }),
            ),
            (
                "payload-log-sample-rate",
                payload(crate::monitoring::PayloadLogConfig {
                    sample_rate: 1.5,
                    ..Default::default()
                }),
            ),
            (
                "payload-log-queue-size",
                payload(crate::monitoring::PayloadLogConfig {
                    queue_size: 0,
                    ..Default::default()
                }),
            ),
        ]);
        for (option, config) in cases {
            let e = config.validate().expect_err(option);
            assert_eq!(e.option, option, "{e}");
        }
        let ok = ServerConfig {
            allowed_origins: vec!["*".into(), "http://localhost:3000".into()],
            ..Default::default()
        };
        assert_eq!(ok.validate(), Ok(()));
    }
}
