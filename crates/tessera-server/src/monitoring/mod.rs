//! Monitoring beyond latency: drift statistics of what each model version is
//! asked and answers.

pub mod stats;
