//! `POST /tokenize` and `POST /detokenize` (vLLM's shapes).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::body::{typed, JsonObject};
use crate::context::Ctx;
use crate::error::ApiError;
use crate::messages;
use crate::registry::{route, RouteRequest};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenizeRequest {
    model: Option<String>,
    /// Text to tokenize; or
    prompt: Option<String>,
    /// chat messages, rendered with the model's template first.
    messages: Option<Vec<Value>>,
    /// Add the model's BOS and the like (default: true for `prompt`, false for `messages`).
    add_special_tokens: Option<bool>,
    /// With `messages`: end where the assistant's reply begins (default true).
    add_generation_prompt: Option<bool>,
}

/// The tokens of a prompt.
#[derive(Debug, Serialize)]
pub struct TokenizeResponse {
    pub count: usize,
    pub max_model_len: usize,
    pub tokens: Vec<u32>,
}

/// Tokenizes `prompt` or renders and tokenizes `messages`.
pub async fn tokenize(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Json<TokenizeResponse>, ApiError> {
    let req: TokenizeRequest = typed(body)?;
    let to = RouteRequest {
        model: req.model.as_deref(),
        ..RouteRequest::default()
    };
    let model = route(&state, &ctx, &headers, to).await?.model;
    let tokens = match (req.prompt, req.messages) {
        (Some(prompt), None) => model
            .text
            .encode(&prompt, req.add_special_tokens.unwrap_or(true))
            .map_err(ApiError::bad_request)?,
        (None, Some(msgs)) => {
            let msgs = messages::normalize(&msgs)?;
            let text = model
                .text
                .render_chat(&msgs, req.add_generation_prompt.unwrap_or(true))
                .map_err(|e| ApiError::invalid_param("messages", e))?;
            model
                .text
                .encode(&text, req.add_special_tokens.unwrap_or(false))
                .map_err(ApiError::bad_request)?
        }
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of 'prompt' and 'messages'",
            ))
        }
    };
    Ok(Json(TokenizeResponse {
        count: tokens.len(),
        max_model_len: model.max_len(),
        tokens,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DetokenizeRequest {
    model: Option<String>,
    tokens: Vec<u32>,
}

/// The text of some tokens.
#[derive(Debug, Serialize)]
pub struct DetokenizeResponse {
    pub prompt: String,
}

/// Decodes `tokens` (special tokens included, so the text round-trips).
pub async fn detokenize(
    State(state): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Json<DetokenizeResponse>, ApiError> {
    let req: DetokenizeRequest = typed(body)?;
    let to = RouteRequest {
        model: req.model.as_deref(),
        ..RouteRequest::default()
    };
    let model = route(&state, &ctx, &headers, to).await?.model;
    let prompt = model
        .text
        .decode(&req.tokens, false)
        .map_err(|e| ApiError::invalid_param("tokens", e))?;
    Ok(Json(DetokenizeResponse { prompt }))
}
