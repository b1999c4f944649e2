//! The JSON objects of the Files and Batches APIs, as OpenAI writes them.

use serde_json::{json, Value};
use tessera_store::{BatchRecord, FileRecord};

/// A `file` object.
pub fn file(f: &FileRecord) -> Value {
    json!({
        "id": f.id,
        "object": "file",
        "bytes": f.bytes,
        "created_at": f.created_at,
        "filename": f.filename,
        "purpose": f.purpose,
        "status": "processed",
        "status_details": null,
    })
}

/// A `batch` object.
pub fn batch(b: &BatchRecord) -> Value {
    json!({
        "id": b.id,
        "object": "batch",
        "endpoint": b.endpoint,
        "errors": b.errors.as_ref().map(|data| json!({"object": "list", "data": data})),
        "input_file_id": b.input_file_id,
        "completion_window": b.completion_window,
        "status": b.status.as_str(),
        "output_file_id": b.output_file_id,
        "error_file_id": b.error_file_id,
        "created_at": b.created_at,
        "in_progress_at": b.in_progress_at,
        "expires_at": b.expires_at,
        "finalizing_at": b.finalizing_at,
        "completed_at": b.completed_at,
        "failed_at": b.failed_at,
        "expired_at": b.expired_at,
        "cancelling_at": b.cancelling_at,
        "cancelled_at": b.cancelled_at,
        "request_counts": {
            "total": b.counts.total,
            "completed": b.counts.completed,
            "failed": b.counts.failed,
        },
        "metadata": b.metadata,
    })
}

/// A page of at most `limit` of `items`, fetched with one more than the page
/// holds so that `has_more` needs no second query; each item shaped by `shape`.
pub fn page<T>(items: &[T], limit: usize, shape: impl Fn(&T) -> Value) -> Value {
    let has_more = items.len() > limit;
    list(items.iter().take(limit).map(shape).collect(), has_more)
}

/// A page of a list: `{object: "list", data, first_id, last_id, has_more}`.
pub fn list(data: Vec<Value>, has_more: bool) -> Value {
    let id = |v: Option<&Value>| v.and_then(|v| v.get("id")).cloned();
    json!({
        "object": "list",
        "first_id": id(data.first()),
        "last_id": id(data.last()),
        "has_more": has_more,
        "data": data,
    })
}

/// Refuses query parameters other than `known` (nothing is ignored).
pub fn check_query(query: Option<&str>, known: &[&str]) -> Result<(), crate::error::ApiError> {
    let unknown = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').map_or(pair, |(k, _)| k))
        .find(|k| !known.contains(k));
    match unknown {
        None => Ok(()),
        Some(k) => Err(crate::error::ApiError::invalid_param(
            k.to_string(),
            format!(
                "Unknown query parameter '{k}' (known: {})",
                known.join(", ")
            ),
        )),
    }
}

/// The value of query parameter `name` (ours are ids and numbers: no
/// percent-decoding needed, and a value that would need it matches nothing).
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}
