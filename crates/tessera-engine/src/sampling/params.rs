//! Per-request sampling parameters and their validation.

use crate::constraint::Constraint;

/// Temperatures below this are treated as greedy, like vLLM's `_SAMPLING_EPS`:
/// dividing by a near-zero temperature would overflow the scaled logits anyway.
pub const GREEDY_TEMPERATURE_EPS: f32 = 1e-5;
/// Most alternatives a request may ask for in `logprobs` (OpenAI's limit).
pub const MAX_LOGPROBS: usize = 20;
/// Most stop strings a request may carry (vLLM's default bound is larger; we
/// keep OpenAI's tighter one because each string is scanned on every token).
pub const MAX_STOP_STRINGS: usize = 16;
/// Largest magnitude of a `logit_bias` value (OpenAI's range).
pub const MAX_LOGIT_BIAS: f32 = 100.0;
/// Largest magnitude of the presence and frequency penalties (OpenAI's range).
pub const MAX_PRESENCE_FREQUENCY_PENALTY: f32 = 2.0;

/// Per-request sampling parameters (OpenAI / vLLM semantics).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Parallel samples of the request, >= 1.
    pub n: usize,
    /// Softmax temperature, >= 0; below [`GREEDY_TEMPERATURE_EPS`] means greedy.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 = off.
    pub top_k: usize,
    /// Nucleus sampling mass in (0, 1]; 1 = off.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the top one; in [0, 1], 0 = off.
    pub min_p: f32,
    /// Must be > 0; 1 = off. Applied (HF / vLLM style) to every token of the prompt and
    /// the output: positive logits are divided by it, negative ones multiplied.
    pub repetition_penalty: f32,
    /// In [-2, 2]; subtracted once from every token that occurs in the output.
    pub presence_penalty: f32,
    /// In [-2, 2]; subtracted once per occurrence in the output.
    pub frequency_penalty: f32,
    /// `(token, bias)` pairs added to the logits; bias in [-100, 100].
    pub logit_bias: Vec<(u32, f32)>,
    /// RNG seed; `None` draws a random one.
    pub seed: Option<u64>,
    /// Most output tokens, >= 1.
    pub max_tokens: usize,
    /// EOS and `stop_token_ids` are masked until this many output tokens; <= `max_tokens`.
    pub min_tokens: usize,
    /// Stop strings; matched by the engine's output side, only validated here.
    pub stop: Vec<String>,
    /// Tokens that end the sequence, in addition to the model's EOS.
    pub stop_token_ids: Vec<u32>,
    /// Keep generating after EOS (EOS is then also not masked by `min_tokens`).
    pub ignore_eos: bool,
    /// `Some(k)`: return the chosen token's logprob and the `k` (<= 20) best alternatives.
    pub logprobs: Option<usize>,
    /// Drop special tokens when detokenizing.
    pub skip_special_tokens: bool,
    /// Structured output: only tokens the constraint allows are sampled, and
    /// the sequence stops when it is complete (`max_tokens` still applies).
    pub constraint: Option<Constraint>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            n: 1,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
            max_tokens: 16,
            min_tokens: 0,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            logprobs: None,
            skip_special_tokens: true,
            constraint: None,
        }
    }
}

/// A rejected sampling parameter; the message is meant for an OpenAI 400 error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    /// `param` is out of its allowed range; `msg` says the range and the value.
    #[error("invalid parameter '{param}': {msg}")]
    Invalid {
        /// The offending field, spelled as in the OpenAI request.
        param: &'static str,
        /// What is allowed and what was given.
        msg: String,
    },
}

fn invalid(param: &'static str, msg: String) -> SamplingError {
    SamplingError::Invalid { param, msg }
}

/// Rejects `value` unless it lies in `[lo, hi]`. Written as a negated
/// containment so that NaN, which compares false with everything, is rejected.
fn check_range(param: &'static str, value: f32, lo: f32, hi: f32) -> Result<(), SamplingError> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            param,
            format!("must be in [{lo}, {hi}], got {value}"),
        ))
    }
}

fn check_token(param: &'static str, token: u32, vocab_size: usize) -> Result<(), SamplingError> {
    if (token as usize) < vocab_size {
        Ok(())
    } else {
        Err(invalid(
            param,
            format!("token id {token} is out of range for a vocabulary of {vocab_size} tokens"),
        ))
    }
}

impl SamplingParams {
    /// Checks every field; the error message names the parameter and the
    /// allowed range (it becomes an OpenAI 400 error). NaN is rejected wherever
    /// a float is expected.
    pub fn validate(&self, vocab_size: usize) -> Result<(), SamplingError> {
        if self.n < 1 {
            return Err(invalid("n", format!("must be >= 1, got {}", self.n)));
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(invalid(
                "temperature",
                format!("must be a finite number >= 0, got {}", self.temperature),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(invalid(
                "top_p",
                format!("must be in (0, 1], got {}", self.top_p),
            ));
        }
        check_range("min_p", self.min_p, 0.0, 1.0)?;
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(invalid(
                "repetition_penalty",
                format!(
                    "must be a finite number > 0, got {}",
                    self.repetition_penalty
                ),
            ));
        }
        let pf = MAX_PRESENCE_FREQUENCY_PENALTY;
        check_range("presence_penalty", self.presence_penalty, -pf, pf)?;
        check_range("frequency_penalty", self.frequency_penalty, -pf, pf)?;
        for &(token, bias) in &self.logit_bias {
            check_token("logit_bias", token, vocab_size)?;
            check_range("logit_bias", bias, -MAX_LOGIT_BIAS, MAX_LOGIT_BIAS)?;
        }
        if self.max_tokens < 1 {
            return Err(invalid(
                "max_tokens",
                format!("must be >= 1, got {}", self.max_tokens),
            ));
        }
        if self.min_tokens > self.max_tokens {
            return Err(invalid(
                "min_tokens",
                format!(
                    "must be <= max_tokens ({}), got {}",
                    self.max_tokens, self.min_tokens
                ),
            ));
        }
        if self.stop.len() > MAX_STOP_STRINGS {
            return Err(invalid(
                "stop",
                format!(
                    "at most {MAX_STOP_STRINGS} stop strings, got {}",
                    self.stop.len()
                ),
            ));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(invalid(
                "stop",
                "stop strings must be non-empty".to_string(),
            ));
        }
        for &token in &self.stop_token_ids {
            check_token("stop_token_ids", token, vocab_size)?;
        }
        if let Some(k) = self.logprobs {
            if k > MAX_LOGPROBS {
                return Err(invalid(
                    "logprobs",
                    format!("must be in [0, {MAX_LOGPROBS}], got {k}"),
                ));
            }
        }
        Ok(())
    }

    /// Whether the request samples greedily (temperature below
    /// [`GREEDY_TEMPERATURE_EPS`]); top_k, top_p and min_p are then ignored.
    pub fn is_greedy(&self) -> bool {
        self.temperature < GREEDY_TEMPERATURE_EPS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOCAB: usize = 100;

    fn rejected(mutate: impl FnOnce(&mut SamplingParams)) -> &'static str {
        let mut p = SamplingParams::default();
        mutate(&mut p);
        match p.validate(VOCAB) {
            Err(SamplingError::Invalid { param, msg }) => {
                assert!(!msg.is_empty());
                param
            }
            Ok(()) => panic!("accepted invalid params {p:?}"),
        }
    }

    #[test]
    fn defaults_and_boundaries_are_valid() {
        assert_eq!(SamplingParams::default().validate(VOCAB), Ok(()));
        let p = SamplingParams {
            n: 4,
            temperature: 0.0,
            top_k: 1_000_000,
            top_p: 1.0,
            min_p: 1.0,
            repetition_penalty: 0.01,
            presence_penalty: -2.0,
            frequency_penalty: 2.0,
            logit_bias: vec![(0, -100.0), (99, 100.0)],
            seed: Some(u64::MAX),
            max_tokens: 5,
            min_tokens: 5,
            stop: vec!["x".into(); MAX_STOP_STRINGS],
            stop_token_ids: vec![0, 99],
            ignore_eos: true,
            logprobs: Some(20),
            skip_special_tokens: false,
            constraint: None,
        };
        assert_eq!(p.validate(VOCAB), Ok(()));
        assert_eq!(
            SamplingParams {
                logprobs: Some(0),
                ..Default::default()
            }
            .validate(VOCAB),
            Ok(())
        );
    }

    #[test]
    fn each_out_of_range_field_is_named() {
        assert_eq!(rejected(|p| p.n = 0), "n");
        assert_eq!(rejected(|p| p.temperature = -0.1), "temperature");
        assert_eq!(rejected(|p| p.temperature = f32::NAN), "temperature");
        assert_eq!(rejected(|p| p.temperature = f32::INFINITY), "temperature");
        assert_eq!(rejected(|p| p.top_p = 0.0), "top_p");
        assert_eq!(rejected(|p| p.top_p = 1.01), "top_p");
        assert_eq!(rejected(|p| p.top_p = f32::NAN), "top_p");
        assert_eq!(rejected(|p| p.min_p = -0.01), "min_p");
        assert_eq!(rejected(|p| p.min_p = 1.5), "min_p");
        assert_eq!(rejected(|p| p.min_p = f32::NAN), "min_p");
        assert_eq!(
            rejected(|p| p.repetition_penalty = 0.0),
            "repetition_penalty"
        );
        assert_eq!(
            rejected(|p| p.repetition_penalty = f32::NAN),
            "repetition_penalty"
        );
        assert_eq!(rejected(|p| p.presence_penalty = 2.5), "presence_penalty");
        assert_eq!(
            rejected(|p| p.presence_penalty = f32::NAN),
            "presence_penalty"
        );
        assert_eq!(
            rejected(|p| p.frequency_penalty = -2.5),
            "frequency_penalty"
        );
        assert_eq!(rejected(|p| p.logit_bias = vec![(1, 100.5)]), "logit_bias");
        assert_eq!(
            rejected(|p| p.logit_bias = vec![(1, f32::NAN)]),
            "logit_bias"
        );
        assert_eq!(
            rejected(|p| p.logit_bias = vec![(VOCAB as u32, 1.0)]),
            "logit_bias"
        );
        assert_eq!(rejected(|p| p.max_tokens = 0), "max_tokens");
        assert_eq!(rejected(|p| p.min_tokens = 17), "min_tokens");
        assert_eq!(rejected(|p| p.stop = vec![String::new()]), "stop");
        assert_eq!(
            rejected(|p| p.stop = vec!["a".into(); MAX_STOP_STRINGS + 1]),
            "stop"
        );
        assert_eq!(
            rejected(|p| p.stop_token_ids = vec![3, VOCAB as u32]),
            "stop_token_ids"
        );
        assert_eq!(rejected(|p| p.logprobs = Some(21)), "logprobs");
    }

    #[test]
    fn error_message_names_param_and_range() {
        let p = SamplingParams {
            top_p: 2.0,
            ..Default::default()
        };
        let msg = p.validate(VOCAB).unwrap_err().to_string();
        assert_eq!(msg, "invalid parameter 'top_p': must be in (0, 1], got 2");
    }

    #[test]
    fn greedy_is_temperature_zero() {
        assert!(SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
        .is_greedy());
        assert!(!SamplingParams::default().is_greedy());
        assert!(!SamplingParams {
            temperature: 0.01,
            ..Default::default()
        }
        .is_greedy());
    }
}
