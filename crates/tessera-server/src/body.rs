//! Reading request bodies: JSON objects with OpenAI-shaped errors for every
//! way a body can be wrong (not JSON, not an object, too large, a field of the
//! wrong type), instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// A request body that is a JSON object.
pub struct JsonObject(pub Map<String, Value>);

impl FromRequest<AppState> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        parse_object(&read_body(req, state).await?).map(JsonObject)
    }
}

/// The body's bytes, under the server's size limit.
async fn read_body(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state)
        .await
        .map_err(|e| body_error(&e, state.config().max_body_bytes))
}

/// A request body that is a JSON object or empty (an empty object then).
pub struct OptionalJsonObject(pub Map<String, Value>);

impl FromRequest<AppState> for OptionalJsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(Map::new()));
        }
        parse_object(&bytes).map(Self)
    }
}

fn body_error(e: &BytesRejection, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::body_too_large(limit)
    } else {
        ApiError::bad_request(format!("could not read the request body: {e}"))
    }
}

/// Parses `bytes` as a JSON object.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "We could not parse the JSON body of your request: {e}"
        ))),
    }
}

/// Deserializes a JSON object into `T`, naming the field at fault on error.
pub fn typed<T: DeserializeOwned>(map: Map<String, Value>) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        if let Some(field) = unknown_field(&message) {
            // serde lists only the fields of the struct at hand, which would
            // mislead (the shared sampling fields are parsed separately).
            return ApiError::invalid_param(
                field,
                format!("Unrecognized request argument supplied: {field}"),
            );
        }
        if path == "." || path.is_empty() {
            // An unknown field (deny_unknown_fields) or a missing one: serde's
            // message names it.
            ApiError::bad_request(message)
        } else {
            ApiError::invalid_param(path.clone(), format!("invalid '{path}': {message}"))
        }
    })
}

/// The field named in serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// Removes the entries named in `keys` from `map` into a map of their own.
pub fn take_keys(map: &mut Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    keys.iter()
        .filter_map(|k| map.remove(*k).map(|v| (k.to_string(), v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        a: Option<u32>,
    }

    #[test]
    fn bad_bodies_are_400s() {
        assert!(parse_object(b"{not json").is_err());
        assert!(parse_object(b"[1, 2]").is_err());
        assert!(parse_object(br#"{"a": 1}"#).is_ok());
    }

    #[test]
    fn type_errors_name_the_field_and_unknown_fields_are_named() {
        let map = parse_object(br#"{"a": "x"}"#).expect("object");
        let e = typed::<T>(map).expect_err("wrong type");
        assert_eq!(e.param.as_deref(), Some("a"));
        let map = parse_object(br#"{"b": 1}"#).expect("object");
        let e = typed::<T>(map).expect_err("unknown");
        assert_eq!(e.message, "Unrecognized request argument supplied: b");
        assert_eq!(e.param.as_deref(), Some("b"));
    }
}
