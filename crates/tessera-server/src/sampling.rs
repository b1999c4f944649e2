//! The sampling fields chat and completions requests share, under their OpenAI
//! names plus the common extensions (vLLM's spelling), and their conversion to
//! the engine's [`SamplingParams`].

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Number, Value};
use tessera_engine::request::Priority;
use tessera_engine::SamplingParams;

use tessera_manager::KeepAlive;

use crate::body::{take_keys, typed};
use crate::error::ApiError;
use crate::registry::RouteRequest;

/// Completions' `max_tokens` when a request gives none (OpenAI's default).
pub const DEFAULT_COMPLETION_MAX_TOKENS: usize = 16;
/// Most samples per prompt (OpenAI's limit): each is a sequence in the engine,
/// so an unbounded `n` would let one request exhaust the server.
pub const MAX_N: usize = 128;

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// A single stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a last chunk with the whole request's usage.
    pub include_usage: Option<bool>,
}

/// Fields shared by `/v1/chat/completions` and `/v1/completions`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingFields {
    pub model: Option<String>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<usize>,
    pub max_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Option<Stop>,
    pub seed: Option<Number>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logit_bias: Option<HashMap<String, f32>>,
    /// OpenAI's processing tier: `flex` runs as a batch-priority request.
    pub service_tier: Option<String>,
    /// vLLM's per-request priority (lower runs earlier). Like vLLM under its
    /// default first-come-first-served policy, only 0 is accepted: the
    /// scheduler orders by class (`service_tier`), not by number.
    pub priority: Option<i64>,
    /// The end user; keeps a client on one version of a weighted alias.
    pub user: Option<String>,
    // Extensions.
    /// How long the model stays loaded once idle after this request
    /// (Ollama's: a duration like `"5m"` or seconds; `0` unloads it after
    /// this request, a negative value keeps it loaded).
    pub keep_alive: Option<Value>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub ignore_eos: Option<bool>,
    pub min_tokens: Option<usize>,
    pub stop_token_ids: Option<Vec<u32>>,
    pub skip_special_tokens: Option<bool>,
}

/// The names of [`SamplingFields`]' fields (kept in step by a test).
const FIELDS: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    "n",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "service_tier",
    "priority",
    "user",
    "keep_alive",
    "top_k",
    "min_p",
    "repetition_penalty",
    "ignore_eos",
    "min_tokens",
    "stop_token_ids",
    "skip_special_tokens",
];

impl SamplingFields {
    /// Takes the shared fields out of `body` and parses them.
    pub fn take(body: &mut Map<String, Value>) -> Result<Self, ApiError> {
        typed(take_keys(body, FIELDS))
    }

    /// Whether the response streams.
    pub fn streaming(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether a streamed response ends with a usage chunk.
    pub fn include_usage(&self) -> Result<bool, ApiError> {
        match &self.stream_options {
            Some(o) if !self.streaming() && o.include_usage.is_some() => {
                Err(ApiError::invalid_param(
                    "stream_options",
                    "stream_options is only allowed when stream is true",
                ))
            }
            Some(o) => Ok(o.include_usage.unwrap_or(false)),
            None => Ok(false),
        }
    }

    /// The request's `keep_alive`, checked.
    pub fn keep_alive(&self) -> Result<Option<KeepAlive>, ApiError> {
        let parsed = match &self.keep_alive {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => KeepAlive::parse(s),
            Some(Value::Number(n)) => n
                .as_f64()
                .ok_or_else(|| "keep_alive: not a number".to_string())
                .and_then(KeepAlive::from_seconds),
            Some(_) => {
                Err("keep_alive must be a duration like \"5m\" or a number of seconds".into())
            }
        };
        parsed
            .map(Some)
            .map_err(|e| ApiError::invalid_param("keep_alive", e))
    }

    /// Where the request goes: `model`, `user` and `keep_alive`.
    pub fn route_request(&self) -> Result<RouteRequest<'_>, ApiError> {
        Ok(RouteRequest {
            model: self.model.as_deref(),
            user: self.user.as_deref(),
            keep_alive: self.keep_alive()?,
        })
    }

    /// The scheduling class `service_tier` asks for.
    pub fn priority(&self) -> Result<Priority, ApiError> {
        if let Some(p) = self.priority.filter(|&p| p != 0) {
            return Err(ApiError::invalid_param(
                "priority",
                format!(
                    "priority {p} needs priority scheduling, which this server does not do: \
                     send 0, or service_tier \"flex\" to run behind interactive requests"
                ),
            ));
        }
        match self.service_tier.as_deref() {
            None | Some("auto" | "default") => Ok(Priority::Interactive),
            Some("flex") => Ok(Priority::Batch),
            Some(other) => Err(ApiError::invalid_param(
                "service_tier",
                format!("service_tier must be 'auto', 'default' or 'flex', got '{other}'"),
            )),
        }
    }

    /// The engine's parameters, with `n` at most `max_n` (the server's
    /// limit). `max_tokens` is decided by the caller (it depends on the
    /// prompt's length); logprobs are set per endpoint.
    pub fn to_params(&self, max_tokens: usize, max_n: usize) -> Result<SamplingParams, ApiError> {
        let d = SamplingParams::default();
        let top_k = match self.top_k {
            None | Some(0) | Some(-1) => 0,
            Some(k) if k > 0 => usize::try_from(k).unwrap_or(usize::MAX),
            Some(k) => {
                return Err(ApiError::invalid_param(
                    "top_k",
                    format!("top_k must be -1 or 0 (off) or positive, got {k}"),
                ))
            }
        };
        let n = self.n.unwrap_or(1);
        if !(1..=max_n).contains(&n) {
            return Err(ApiError::invalid_param(
                "n",
                format!("n must be in [1, {max_n}], got {n}"),
            ));
        }
        let mut logit_bias = Vec::new();
        for (token, &bias) in self.logit_bias.iter().flatten() {
            let id = token.parse::<u32>().map_err(|_| {
                ApiError::invalid_param(
                    "logit_bias",
                    format!("logit_bias keys must be token ids, got '{token}'"),
                )
            })?;
            logit_bias.push((id, bias));
        }
        logit_bias.sort_by_key(|&(id, _)| id);
        Ok(SamplingParams {
            n,
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k,
            top_p: self.top_p.unwrap_or(d.top_p),
            min_p: self.min_p.unwrap_or(d.min_p),
            repetition_penalty: self.repetition_penalty.unwrap_or(d.repetition_penalty),
            presence_penalty: self.presence_penalty.unwrap_or(d.presence_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(d.frequency_penalty),
            logit_bias,
            seed: self.seed.as_ref().map(seed_bits).transpose()?,
            max_tokens,
            min_tokens: self.min_tokens.unwrap_or(0),
            stop: match &self.stop {
                None => Vec::new(),
                Some(Stop::One(s)) => vec![s.clone()],
                Some(Stop::Many(v)) => v.clone(),
            },
            stop_token_ids: self.stop_token_ids.clone().unwrap_or_default(),
            ignore_eos: self.ignore_eos.unwrap_or(false),
            logprobs: None,
            skip_special_tokens: self.skip_special_tokens.unwrap_or(true),
            constraint: None,
        })
    }
}

/// OpenAI seeds are any integer; negative ones keep their two's-complement bits.
fn seed_bits(n: &Number) -> Result<u64, ApiError> {
    n.as_u64()
        .or_else(|| n.as_i64().map(|i| i as u64))
        .ok_or_else(|| ApiError::invalid_param("seed", format!("seed must be an integer, got {n}")))
}

/// `max_tokens` for a prompt of `prompt_len` tokens: the requested number,
/// checked against the server's `cap` and the context, or `default` capped to
/// both. The overflow error uses OpenAI's wording and numbers.
pub fn decide_max_tokens(
    requested: Option<usize>,
    default: Option<usize>,
    prompt_len: usize,
    max_len: usize,
    cap: Option<usize>,
    what: &str,
) -> Result<usize, ApiError> {
    let room = max_len.saturating_sub(prompt_len);
    match requested {
        Some(0) => Err(ApiError::invalid_param(
            "max_tokens",
            "max_tokens must be at least 1, got 0",
        )),
        Some(m) if cap.is_some_and(|c| m > c) => Err(ApiError::invalid_param(
            "max_tokens",
            format!(
                "max_tokens is {m}, above this server's limit of {}",
                cap.unwrap_or(0)
            ),
        )
        .with_code("max_tokens_too_large")),
        Some(m) if prompt_len.saturating_add(m) > max_len => {
            Err(overflow(max_len, prompt_len, m, what))
        }
        Some(m) => Ok(m),
        None if room == 0 => Err(overflow(max_len, prompt_len, 1, what)),
        None => Ok(default
            .map_or(room, |d| d.min(room))
            .min(cap.unwrap_or(usize::MAX))),
    }
}

fn overflow(max_len: usize, prompt: usize, completion: usize, what: &str) -> ApiError {
    ApiError::invalid_param(
        if what == "messages" {
            "messages"
        } else {
            "prompt"
        },
        format!(
            "This model's maximum context length is {max_len} tokens. However, you requested \
             {} tokens ({prompt} in the {what}, {completion} in the completion). Please reduce \
             the length of the {what} or completion.",
            prompt + completion
        ),
    )
    .with_code("context_length_exceeded")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Result<SamplingFields, ApiError> {
        let Value::Object(mut map) = v else {
            panic!("object")
        };
        SamplingFields::take(&mut map)
    }

    #[test]
    fn every_listed_field_is_a_field() {
        // A name in FIELDS that the struct lacks would be an unknown-field error.
        for name in FIELDS {
            let mut map = Map::new();
            map.insert(name.to_string(), Value::Null);
            assert!(typed::<SamplingFields>(map).is_ok(), "{name}");
        }
    }

    #[test]
    fn openai_names_map_to_engine_params() {
        let f = fields(
            json!({"n": 2, "temperature": 0.5, "top_p": 0.9, "stop": "x", "seed": -1,
            "logit_bias": {"7": 5.0, "3": -1.0}, "top_k": -1, "min_p": 0.1,
            "repetition_penalty": 1.1, "ignore_eos": true, "min_tokens": 2}),
        )
        .expect("parses");
        let p = f.to_params(10, MAX_N).expect("valid");
        assert_eq!((p.n, p.temperature, p.top_p, p.top_k), (2, 0.5, 0.9, 0));
        assert_eq!(p.stop, vec!["x".to_string()]);
        assert_eq!(p.seed, Some(u64::MAX));
        assert_eq!(p.logit_bias, vec![(3, -1.0), (7, 5.0)]);
        assert_eq!((p.min_p, p.repetition_penalty), (0.1, 1.1));
        assert!(p.ignore_eos);
        assert_eq!((p.min_tokens, p.max_tokens), (2, 10));
    }

    #[test]
    fn priority_is_vllms_default_policy_and_flex_is_batch() {
        let class = |v| fields(v).expect("parses").priority();
        assert_eq!(class(json!({})).ok(), Some(Priority::Interactive));
        assert_eq!(
            class(json!({"priority": 0})).ok(),
            Some(Priority::Interactive)
        );
        assert_eq!(
            class(json!({"priority": 0, "service_tier": "flex"})).ok(),
            Some(Priority::Batch)
        );
        let e = class(json!({"priority": -5})).expect_err("non-zero");
        assert_eq!(e.param.as_deref(), Some("priority"));
        assert!(fields(json!({"priority": "high"})).is_err());
    }

    #[test]
    fn bad_values_name_their_field() {
        let e = fields(json!({"temperature": "hot"})).expect_err("type");
        assert_eq!(e.param.as_deref(), Some("temperature"));
        let e = fields(json!({"logit_bias": {"abc": 1.0}}))
            .expect("parses")
            .to_params(1, MAX_N)
            .expect_err("key");
        assert_eq!(e.param.as_deref(), Some("logit_bias"));
        let e = fields(json!({"n": 129}))
            .expect("parses")
            .to_params(1, MAX_N)
            .expect_err("n");
        assert_eq!(e.param.as_deref(), Some("n"));
        let e = fields(json!({"top_k": -5}))
            .expect("parses")
            .to_params(1, MAX_N)
            .expect_err("k");
        assert_eq!(e.param.as_deref(), Some("top_k"));
        let e = fields(json!({"stream_options": {"include_usage": true}}))
            .expect("parses")
            .include_usage()
            .expect_err("needs stream");
        assert_eq!(e.param.as_deref(), Some("stream_options"));
    }

    #[test]
    fn max_tokens_fits_the_context_or_fails_with_openai_wording() {
        assert_eq!(
            decide_max_tokens(None, None, 10, 100, None, "messages").ok(),
            Some(90)
        );
        assert_eq!(
            decide_max_tokens(None, Some(16), 95, 100, None, "prompt").ok(),
            Some(5)
        );
        assert_eq!(
            decide_max_tokens(Some(90), None, 10, 100, None, "messages").ok(),
            Some(90)
        );
        let e = decide_max_tokens(Some(91), None, 10, 100, None, "messages").expect_err("over");
        assert_eq!(
            e.message,
            "This model's maximum context length is 100 tokens. However, you requested 101 \
             tokens (10 in the messages, 91 in the completion). Please reduce the length of the \
             messages or completion."
        );
        assert_eq!(e.code, Some("context_length_exceeded"));
        assert!(decide_max_tokens(Some(0), None, 1, 100, None, "prompt").is_err());
        assert!(decide_max_tokens(None, None, 100, 100, None, "prompt").is_err());
        // The server's cap: a larger request is refused, the default is capped.
        let e = decide_max_tokens(Some(50), None, 10, 100, Some(40), "prompt").expect_err("cap");
        assert_eq!(e.code, Some("max_tokens_too_large"));
        assert_eq!(
            decide_max_tokens(None, None, 10, 100, Some(40), "prompt").ok(),
            Some(40)
        );
    }
}
