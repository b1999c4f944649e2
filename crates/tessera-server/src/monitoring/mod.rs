//! Monitoring beyond latency: drift statistics of what each model version is
//! asked and answers, and payload logging of requests and responses to
//! sinks, both kept off the serving path's critical work.

pub mod baseline;
pub mod drift;
pub mod payload;
pub mod signals;
pub mod stats;

pub use baseline::Baseline;
pub use drift::{DriftConfig, DriftMonitor, Observation};
pub use payload::{PayloadLogConfig, PayloadLogger};
pub use signals::Signal;
