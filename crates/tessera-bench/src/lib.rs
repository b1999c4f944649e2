//! `tessera bench`: a serving benchmark for any OpenAI-compatible server
//! (tessera, llama.cpp's `llama-server`, vLLM), measured from the client side
//! the way vLLM's benchmark_serving.py script measures: time to first token, time
//! per output token, inter-token latency, end-to-end latency, throughput and
//! goodput under SLOs.
//!
//! The pieces, one concern each:
//! - [`workload`]: the requests to send (random prompts of exact token lengths,
//!   a JSONL file of prompts, ShareGPT conversations), seeded;
//! - [`tokenizer`]: token counts, from a `tokenizer.json` or the server's own
//!   `/tokenize` and `/detokenize`;
//! - [`schedule`]: when each request arrives (all at once, Poisson, gamma);
//! - [`client`]: one streamed request, its SSE parsed and timed;
//! - [`runner`]: one run (warm-up, arrivals, the concurrency cap, progress);
//! - [`stats`] and [`summary`]: percentiles and the metrics of a run;
//! - [`report`]: the JSON document, the tables and the plot;
//! - [`cli`]: the command line, and [`bench`] which ties it all together.
//!
//! It depends on none of tessera's engine, model or server crates: it is a
//! client, and treats tessera like any other server.

pub mod bench;
pub mod cli;
pub mod client;
pub mod error;
pub mod record;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod slo;
pub mod stats;
pub mod summary;
pub mod sweep;
pub mod tokenizer;
pub mod workload;

pub use cli::{BenchArgs, BenchCommand, CompareArgs};
pub use error::{BenchError, Result};
