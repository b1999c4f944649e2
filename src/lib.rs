//! The `tessera` command's wiring, as a library so that end-to-end tests can
//! start the same engine and server the binary does.

pub mod config_file;
pub mod engine_options;
pub mod engine_setup;
pub mod fd_limit;
pub mod generate;
pub mod logging;
pub mod model_path;
pub mod run_batch;
pub mod serve;
pub mod text_model;
