//! What every handler shares.

use std::sync::Arc;

use crate::auth::KeySet;
use crate::config::{ConfigError, ServerConfig};
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use crate::registry::ModelRegistry;
use crate::streams::StreamSlots;

/// The router's state: the models, the settings, and what enforces them.
#[derive(Clone)]
pub struct AppState {
    /// The served models.
    pub registry: Arc<ModelRegistry>,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) api_keys: Arc<KeySet>,
    pub(crate) metrics_key: Arc<KeySet>,
    pub(crate) limiter: Arc<RateLimiter>,
    pub(crate) streams: Arc<StreamSlots>,
    pub(crate) metrics: Arc<Metrics>,
}

impl AppState {
    /// State over `registry` with `config`, checked first.
    pub fn new(registry: Arc<ModelRegistry>, config: ServerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let metrics = Metrics::new()
            .map(|m| m.with_vllm_names(config.vllm_metrics))
            .map_err(|e| ConfigError {
                option: "metrics",
                reason: e.to_string(),
            })?;
        Ok(Self {
            registry,
            api_keys: Arc::new(KeySet::new(&config.api_keys)),
            metrics_key: Arc::new(KeySet::new(config.metrics_key.as_slice())),
            limiter: Arc::new(RateLimiter::new(config.rate_limit.clone())),
            streams: Arc::new(StreamSlots::new(config.limits.max_streams_per_key)),
            metrics: Arc::new(metrics),
            config: Arc::new(config),
        })
    }

    /// The settings.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }
}
