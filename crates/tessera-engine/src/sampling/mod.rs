//! Per-request sampling: turns one row of next-token logits (`&[f32]` of
//! length vocab_size, on the CPU) into a token, with OpenAI / vLLM semantics.
//!
//! A [`Sampler`] per sequence holds the request's [`SamplingParams`] and its
//! own RNG stream, so a seeded request reproduces its tokens whatever else is
//! batched with it. Each step costs a few linear passes over the row at most
//! (one for greedy); penalties, bias and masking touch only the tokens they
//! concern, and vocabulary-sized scratch is reused, never allocated per call.

mod logprobs;
mod params;
mod penalties;
mod sampler;
mod select;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use params::{
    SamplingError, SamplingParams, GREEDY_TEMPERATURE_EPS, MAX_LOGIT_BIAS, MAX_LOGPROBS,
    MAX_PRESENCE_FREQUENCY_PENALTY, MAX_STOP_STRINGS,
};
pub use sampler::{SampledToken, Sampler};
