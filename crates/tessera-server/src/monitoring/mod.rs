//! Monitoring beyond latency: drift statistics of what each model version is
//! asked and answers, kept off the serving path's critical work.

pub mod drift;
pub mod signals;
pub mod stats;

pub use drift::{DriftConfig, DriftMonitor, Observation};
pub use signals::Signal;
