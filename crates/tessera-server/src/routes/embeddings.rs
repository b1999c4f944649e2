//! `POST /v1/embeddings`, as OpenAI's: `input` as text or token ids, one or
//! many; vectors as floats or base64; `dimensions` for models trained for
//! it; vLLM's `truncate_prompt_tokens`. Each input is one engine request, so
//! inputs of concurrent clients share the embedding engine's steps.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tessera_engine::engine::SubmitError;
use tessera_engine::request::Request;
use tessera_engine::sampling::SamplingParams;

use crate::body::{typed, JsonObject};
use crate::context::Ctx;
use crate::error::ApiError;
use crate::registry::{route, with_version, EmbeddingInfo, RouteRequest};
use crate::state::AppState;
use crate::tracker::{Admission, Tracker};

/// Most inputs in one request (OpenAI's limit).
const MAX_INPUTS: usize = 2048;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingRequest {
    input: Value,
    model: Option<String>,
    encoding_format: Option<String>,
    dimensions: Option<i64>,
    user: Option<String>,
    /// vLLM's: keep only the last k tokens of each input (-1: the model's
    /// maximum), instead of refusing inputs that are too long.
    truncate_prompt_tokens: Option<i64>,
    /// As in chat: `flex` runs the inputs at batch priority.
    service_tier: Option<String>,
}

/// One input, before tokenization.
enum Input {
    Text(String),
    Tokens(Vec<u32>),
}

/// `input`'s four shapes, with a message naming them.
fn inputs(value: Value) -> Result<Vec<Input>, ApiError> {
    let shapes = "input must be a string, a list of strings, a list of token ids or a list \
                  of lists of token ids";
    let wrong = || ApiError::invalid_param("input", shapes);
    let token = |v: &Value| v.as_u64().and_then(|t| u32::try_from(t).ok());
    let tokens = |items: &[Value]| items.iter().map(token).collect::<Option<Vec<u32>>>();
    let items = match value {
        Value::String(s) => return Ok(vec![Input::Text(s)]),
        Value::Array(items) => items,
        _ => return Err(wrong()),
    };
    match items.first() {
        None => Err(ApiError::invalid_param("input", "input must not be empty")),
        Some(Value::Number(_)) => Ok(vec![Input::Tokens(tokens(&items).ok_or_else(wrong)?)]),
        Some(Value::String(_)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(Input::Text(s)),
                _ => Err(wrong()),
            })
            .collect(),
        Some(Value::Array(_)) => items
            .iter()
            .map(|v| {
                v.as_array()
                    .and_then(|a| tokens(a))
                    .map(Input::Tokens)
                    .ok_or_else(wrong)
            })
            .collect(),
        Some(_) => Err(wrong()),
    }
}

/// How vectors are written.
#[derive(Clone, Copy)]
enum Encoding {
    Float,
    Base64,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingData {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: usize,
    total_tokens: usize,
}

#[derive(Serialize)]
struct EmbeddingList {
    object: &'static str,
    data: Vec<EmbeddingData>,
    model: String,
    usage: EmbeddingUsage,
}

/// The handler.
pub async fn embeddings(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let req: EmbeddingRequest = typed(body)?;
    let encoding = match req.encoding_format.as_deref() {
        None | Some("float") => Encoding::Float,
        Some("base64") => Encoding::Base64,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "encoding_format",
                format!("encoding_format must be 'float' or 'base64', got '{other}'"),
            ))
        }
    };
    let priority = match req.service_tier.as_deref() {
        // A batch job's line runs at batch priority whatever it says.
        _ if ctx.is_batch() => tessera_engine::request::Priority::Batch,
        None | Some("auto" | "default") => tessera_engine::request::Priority::Interactive,
        Some("flex") => tessera_engine::request::Priority::Batch,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "service_tier",
                format!("service_tier must be 'auto', 'default' or 'flex', got '{other}'"),
            ))
        }
    };
    let inputs = inputs(req.input)?;
    if inputs.len() > MAX_INPUTS {
        return Err(ApiError::invalid_param(
            "input",
            format!(
                "at most {MAX_INPUTS} inputs per request, got {}",
                inputs.len()
            ),
        ));
    }
    let route = route(
        &state,
        &ctx,
        &headers,
        RouteRequest {
            model: req.model.as_deref(),
            user: req.user.as_deref(),
            keep_alive: None,
        },
    )
    .await?;
    let model = route.model.clone();
    let Some(info) = model.embedding else {
        return Err(ApiError::invalid_param(
            "model",
            format!(
                "The model `{}` is not an embedding model; /v1/embeddings serves embedding \
                 models only",
                model.name
            ),
        ));
    };
    let dimensions = check_dimensions(req.dimensions, &info, &model.name)?;
    let max_len = model.max_len();
    let keep = match req.truncate_prompt_tokens {
        None => None,
        Some(-1) => Some(max_len),
        Some(k) if k >= 1 && (k as u64) <= max_len as u64 => Some(k as usize),
        Some(k) => {
            return Err(ApiError::invalid_param(
                "truncate_prompt_tokens",
                format!("truncate_prompt_tokens must be -1 or between 1 and {max_len}, got {k}"),
            ))
        }
    };
    let mut prompts = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let mut ids = match input {
            Input::Text(text) if text.is_empty() => {
                return Err(ApiError::invalid_param(
                    "input",
                    format!("input[{i}] is an empty string"),
                ))
            }
            Input::Text(text) => model
                .text
                .encode(&text, true)
                .map_err(|e| ApiError::invalid_param("input", format!("input[{i}]: {e}")))?,
            Input::Tokens(ids) => ids,
        };
        if ids.is_empty() {
            return Err(ApiError::invalid_param(
                "input",
                format!("input[{i}] is empty"),
            ));
        }
        if let Some(k) = keep {
            if ids.len() > k {
                ids.drain(..ids.len() - k);
            }
        }
        if ids.len() > max_len {
            return Err(ApiError::invalid_param(
                "input",
                format!(
                    "input[{i}] has {} tokens, more than this model's maximum of {max_len}; \
                     shorten it or set truncate_prompt_tokens",
                    ids.len()
                ),
            ));
        }
        prompts.push(ids);
    }
    let total: usize = prompts.iter().map(Vec::len).sum();
    let reservation = state
        .limiter
        .reserve_tokens(ctx.caller, total as u64)
        .map_err(|l| ApiError::rate_limited(&l))?;
    let prompt_lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
    let mut streams = Vec::with_capacity(prompts.len());
    for (i, prompt) in prompts.into_iter().enumerate() {
        let stream = model
            .engine
            .submit(Request {
                prompt_token_ids: prompt,
                params: SamplingParams::default(),
                priority,
            })
            .map_err(|e| match e {
                SubmitError::Invalid(m) => {
                    ApiError::invalid_param("input", format!("input[{i}]: {m}"))
                }
                other => other.into(),
            })?;
        streams.push(stream);
    }
    // Request metrics, the request's log line and the token reservation, as
    // for generation (no tokens are generated).
    let mut tracker = Tracker::new(
        ctx.clone(),
        &state,
        &model.name,
        model.version,
        &prompt_lens,
        1,
        Admission {
            reservation,
            slot: None,
        },
    );
    let collect = async {
        let mut data = Vec::with_capacity(streams.len());
        for (index, mut stream) in streams.into_iter().enumerate() {
            let out = stream.next().await.ok_or_else(|| {
                ApiError::internal("the engine ended an embedding without output")
            })?;
            tracker.on_output(index, &out);
            if let Some(e) = out.error {
                return Err(ApiError::internal(format!("input[{index}]: {e}")));
            }
            let vector = out
                .embedding
                .ok_or_else(|| ApiError::internal("the engine returned no embedding"))?;
            data.push(EmbeddingData {
                object: "embedding",
                index,
                embedding: encode(shorten(vector, dimensions, info.normalized), encoding),
            });
        }
        Ok(data)
    };
    let data = match ctx.deadline {
        Some(at) => tokio::time::timeout_at(at.into(), collect)
            .await
            .map_err(|_| ApiError::timeout(at - ctx.received))??,
        None => collect.await?,
    };
    tracker.on_end();
    let body = EmbeddingList {
        object: "list",
        data,
        model: req.model.unwrap_or_else(|| model.name.clone()),
        usage: EmbeddingUsage {
            prompt_tokens: total,
            total_tokens: total,
        },
    };
    Ok(with_version(Json(body).into_response(), route.version))
}

/// `dimensions`, when the model can give it: a Matryoshka model, between 1
/// and its full length.
fn check_dimensions(
    dimensions: Option<i64>,
    info: &EmbeddingInfo,
    name: &str,
) -> Result<Option<usize>, ApiError> {
    let Some(d) = dimensions else {
        return Ok(None);
    };
    if !info.matryoshka {
        return Err(ApiError::invalid_param(
            "dimensions",
            format!(
                "The model `{name}` does not support dimensions: it was not trained for \
                 shortened vectors (Matryoshka)"
            ),
        ));
    }
    match usize::try_from(d) {
        Ok(d) if (1..=info.dimensions).contains(&d) => Ok(Some(d)),
        _ => Err(ApiError::invalid_param(
            "dimensions",
            format!(
                "dimensions must be between 1 and {}, got {d}",
                info.dimensions
            ),
        )),
    }
}

/// The first `dimensions` values, rescaled to unit length when the model's
/// vectors are.
fn shorten(mut v: Vec<f32>, dimensions: Option<usize>, normalized: bool) -> Vec<f32> {
    let Some(d) = dimensions.filter(|&d| d < v.len()) else {
        return v;
    };
    v.truncate(d);
    if normalized {
        let norm = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        if norm > 0.0 {
            for x in &mut v {
                *x = (f64::from(*x) / norm) as f32;
            }
        }
    }
    v
}

/// Floats as they are, or their little-endian f32 bytes in base64 (what the
/// OpenAI SDK decodes with NumPy's `frombuffer(dtype=float32)`).
fn encode(v: Vec<f32>, encoding: Encoding) -> Vector {
    match encoding {
        Encoding::Float => Vector::Float(v),
        Encoding::Base64 => {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }
}
