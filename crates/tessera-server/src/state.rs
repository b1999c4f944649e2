//! What every handler shares.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::auth::KeySet;
use crate::batch::Batches;
use crate::config::{ConfigError, ServerConfig};
use crate::metrics::Metrics;
use crate::monitoring::{DriftMonitor, PayloadLogger};
use crate::rate_limit::RateLimiter;
use crate::registry::ModelManager;
use crate::streams::StreamSlots;

/// The router's state: the models, the settings, and what enforces them.
#[derive(Clone)]
pub struct AppState {
    /// The served models.
    pub models: Arc<ModelManager>,
    /// Whether the models to load at start-up have been loaded.
    ready: Arc<AtomicBool>,
    pub(crate) admin_keys: Arc<KeySet>,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) api_keys: Arc<KeySet>,
    pub(crate) metrics_key: Arc<KeySet>,
    pub(crate) limiter: Arc<RateLimiter>,
    pub(crate) streams: Arc<StreamSlots>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) drift: Arc<DriftMonitor>,
    pub(crate) payload: Option<Arc<PayloadLogger>>,
    pub(crate) batches: Option<Arc<Batches>>,
}

impl AppState {
    /// State over `models` with `config`, checked first; not ready until
    /// [`Self::set_ready`].
    pub fn new(models: Arc<ModelManager>, config: ServerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let metrics = Arc::new(
            Metrics::new()
                .map(|m| m.with_vllm_names(config.vllm_metrics))
                .map_err(|e| ConfigError {
                    option: "metrics",
                    reason: e.to_string(),
                })?,
        );
        let drift = DriftMonitor::new(config.drift.clone(), metrics.registry()).map_err(|e| {
            ConfigError {
                option: "metrics",
                reason: e.to_string(),
            }
        })?;
        let payload = PayloadLogger::start(config.payload_log.clone(), metrics.registry())
            .map_err(|e| ConfigError {
                option: "payload-log",
                reason: e.to_string(),
            })?;
        let batches = Batches::open(&config.batch).map_err(|e| ConfigError {
            option: "data-dir",
            reason: e.to_string(),
        })?;
        let observer = metrics.clone();
        models.set_observer(move |event| observer.lifecycle(event));
        Ok(Self {
            models,
            ready: Arc::new(AtomicBool::new(false)),
            admin_keys: Arc::new(KeySet::new(&config.admin_api_keys)),
            api_keys: Arc::new(KeySet::new(&config.api_keys)),
            metrics_key: Arc::new(KeySet::new(config.metrics_key.as_slice())),
            limiter: Arc::new(RateLimiter::new(config.rate_limit.clone())),
            streams: Arc::new(StreamSlots::new(config.limits.max_streams_per_key)),
            metrics,
            drift: Arc::new(drift),
            payload: payload.map(Arc::new),
            batches,
            config: Arc::new(config),
        })
    }

    /// The settings.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Marks the start-up loads as done: `/ready` answers 200 and requests
    /// are routed.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Starts running stored batches (resuming those a previous process
    /// left), when the server has a data directory; once.
    pub fn start_batches(&self) {
        if let Some(b) = &self.batches {
            b.start(self.clone());
        }
    }

    /// Whether the start-up loads are done.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}
