//! `/v1/files`: uploads (multipart, streamed to disk, checked to be JSONL
//! on the way), listing, retrieval, contents and deletion, each limited to
//! the caller's own files.

use axum::body::Body;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream;
use serde_json::{json, Value};
use tessera_store::{BlobWriter, NewFile};
use tokio::io::AsyncReadExt;

use super::{not_found, owner, page_limit, service, shapes};
use crate::error::ApiError;
use crate::state::AppState;

/// Room for the multipart framing and the `purpose` field beside the file.
const FORM_OVERHEAD: u64 = 64 << 10;

/// Longest `purpose` value read.
const MAX_PURPOSE: usize = 64;

/// `POST /v1/files`.
pub async fn upload_file(
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let batches = service(&state)?.clone();
    let owner = owner(&state, req.headers());
    let max = batches.config.max_file_bytes;
    let too_large = || ApiError::body_too_large(usize::try_from(max).unwrap_or(usize::MAX));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max.saturating_add(FORM_OVERHEAD)) {
        return Err(too_large());
    }
    let mut form = axum::extract::Multipart::from_request(req, &())
        .await
        .map_err(|e| ApiError::bad_request(format!("The body must be multipart/form-data: {e}")))?;
    let id = crate::ids::new_id("file-");
    let mut purpose = None;
    let mut upload: Option<(String, BlobWriter, JsonlCheck)> = None;
    while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("purpose") => {
                // The route has no body limit of its own: read a bounded value.
                let mut value = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    value.extend_from_slice(&chunk);
                    if value.len() > MAX_PURPOSE {
                        return Err(ApiError::invalid_param("purpose", "purpose is too long"));
                    }
                }
                purpose = Some(String::from_utf8_lossy(&value).into_owned());
            }
            Some("file") => {
                let filename = field.file_name().unwrap_or("upload.jsonl").to_string();
                let mut writer = blocking(&batches, {
                    let id = id.clone();
                    move |store| store.blob_writer(&id)
                })
                .await?;
                let mut check = JsonlCheck::default();
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    if writer.bytes() + chunk.len() as u64 > max {
                        return Err(too_large());
                    }
                    check.push(&chunk);
                    writer =
                        tokio::task::spawn_blocking(move || writer.write(&chunk).map(|()| writer))
                            .await
                            .map_err(|e| ApiError::internal(format!("storage task: {e}")))?
                            .map_err(|e| ApiError::internal(format!("storage: {e}")))?;
                }
                upload = Some((filename, writer, check));
            }
            Some(other) => {
                return Err(ApiError::invalid_param(
                    other.to_string(),
                    format!("Unknown form field '{other}': expected 'file' and 'purpose'."),
                ))
            }
            None => return Err(ApiError::bad_request("A form field has no name.")),
        }
    }
    match purpose.as_deref() {
        Some("batch") => {}
        Some(p) => {
            return Err(ApiError::invalid_param(
                "purpose",
                format!(
                    "purpose must be 'batch' (the only kind of file this server runs), got '{p}'"
                ),
            ))
        }
        None => return Err(ApiError::invalid_param("purpose", "purpose is required")),
    }
    let Some((filename, writer, check)) = upload else {
        return Err(ApiError::invalid_param("file", "file is required"));
    };
    check.finish().map_err(|why| {
        ApiError::invalid_param("file", format!("The file is not JSONL: {why}"))
            .with_code("invalid_file_format")
    })?;
    let record = blocking(&batches, move |store| {
        let bytes = writer.commit()?;
        store.insert_file(&NewFile {
            id,
            owner,
            purpose: "batch".into(),
            filename,
            bytes,
        })
    })
    .await?;
    Ok(Json(shapes::file(&record)))
}

/// `GET /v1/files` (`purpose`, `after`, `limit`).
pub async fn list_files(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let batches = service(&state)?;
    let owner = owner(&state, &headers);
    let query = uri.query();
    shapes::check_query(query, &["purpose", "after", "limit"])?;
    let limit = page_limit(parse_limit(shapes::query_param(query, "limit"))?)?;
    let purpose = shapes::query_param(query, "purpose").map(str::to_string);
    let after = shapes::query_param(query, "after").map(str::to_string);
    let files = batches
        .call(move |s| s.files(&owner, purpose.as_deref(), after.as_deref(), limit + 1))
        .await?;
    Ok(Json(shapes::page(&files, limit, shapes::file)))
}

/// `GET /v1/files/{id}`.
pub async fn retrieve_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let batches = service(&state)?;
    let owner = owner(&state, &headers);
    let key = id.clone();
    batches
        .call(move |s| s.file(&owner, &key))
        .await?
        .map(|f| Json(shapes::file(&f)))
        .ok_or_else(|| not_found("File", &id))
}

/// `GET /v1/files/{id}/content`, streamed from disk.
pub async fn file_content(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let batches = service(&state)?;
    let owner = owner(&state, &headers);
    let key = id.clone();
    let record = batches
        .call(move |s| s.file(&owner, &key))
        .await?
        .ok_or_else(|| not_found("File", &id))?;
    let file = tokio::fs::File::open(batches.store.blob_path(&record.id))
        .await
        .map_err(|e| ApiError::internal(format!("opening the file's contents: {e}")))?;
    let chunks = stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0; 64 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/jsonl".to_string()),
            (header::CONTENT_LENGTH, record.bytes.to_string()),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// `DELETE /v1/files/{id}`.
pub async fn delete_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let batches = service(&state)?;
    let owner = owner(&state, &headers);
    let key = id.clone();
    if batches.call(move |s| s.delete_file(&owner, &key)).await? {
        Ok(Json(json!({"id": id, "object": "file", "deleted": true})))
    } else {
        Err(not_found("File", &id))
    }
}

/// A `limit` query value.
pub(super) fn parse_limit(value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            v.parse().map_err(|_| {
                ApiError::invalid_param("limit", format!("limit must be an integer, got '{v}'"))
            })
        })
        .transpose()
}

async fn blocking<T: Send + 'static>(
    batches: &super::Batches,
    f: impl FnOnce(&tessera_store::Store) -> Result<T, tessera_store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    batches.call(f).await
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    let status = e.status();
    ApiError {
        status,
        ..ApiError::bad_request(format!("Reading the form: {}", e.body_text()))
    }
}

/// Whether a stream of bytes is JSONL, checked as it passes: UTF-8, and at
/// least one line a JSON object. Lines with other mistakes are the batch's
/// to report, with their numbers; this only turns away what is not JSONL at
/// all (a CSV, a PDF, a JSON array). Memory stays bounded: only lines up to
/// [`MAX_CHECKED_LINE`] are kept to be parsed, and only until one parses; a
/// longer line counts as an object when it starts with `{`.
#[derive(Debug, Default)]
struct JsonlCheck {
    /// The current line while it may still be parsed.
    line: Vec<u8>,
    /// Bytes of the current line not kept (it is too long to parse).
    overflow: bool,
    /// The end of the last chunk when it cut a UTF-8 sequence.
    carry: Vec<u8>,
    lines: u64,
    objects: u64,
    not_utf8: Option<u64>,
}

/// Longest line parsed to find a JSON object.
const MAX_CHECKED_LINE: usize = 1 << 20;

impl JsonlCheck {
    fn push(&mut self, data: &[u8]) {
        self.check_utf8(data);
        let mut data = data;
        while let Some(end) = data.iter().position(|&b| b == b'\n') {
            self.keep(&data[..end]);
            self.end_line();
            data = &data[end + 1..];
        }
        self.keep(data);
    }

    /// UTF-8 across chunk boundaries: a sequence cut at a chunk's end is
    /// completed by the next.
    fn check_utf8(&mut self, data: &[u8]) {
        if self.not_utf8.is_some() {
            return;
        }
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(data);
        if let Err(e) = std::str::from_utf8(&bytes) {
            match e.error_len() {
                None => self.carry = bytes[e.valid_up_to()..].to_vec(),
                Some(_) => {
                    let newlines = bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n');
                    self.not_utf8 = Some(self.lines + newlines.count() as u64 + 1);
                }
            }
        }
    }

    fn keep(&mut self, part: &[u8]) {
        if self.objects > 0 || self.overflow {
            return;
        }
        if self.line.len() + part.len() > MAX_CHECKED_LINE {
            self.overflow = true;
            // Judged by its first byte; the batch's validation parses it.
            self.line
                .extend_from_slice(&part[..part.len().min(MAX_CHECKED_LINE - self.line.len())]);
            return;
        }
        self.line.extend_from_slice(part);
    }

    fn end_line(&mut self) {
        self.lines += 1;
        let line = std::mem::take(&mut self.line);
        let overflow = std::mem::take(&mut self.overflow);
        if self.objects > 0 {
            return;
        }
        let object = if overflow {
            line.trim_ascii_start().first() == Some(&b'{')
        } else {
            serde_json::from_slice::<serde_json::Map<String, Value>>(&line).is_ok()
        };
        if object {
            self.objects += 1;
        }
    }

    fn finish(mut self) -> Result<(), String> {
        if !self.line.is_empty() || self.overflow {
            self.end_line();
        }
        if !self.carry.is_empty() && self.not_utf8.is_none() {
            self.not_utf8 = Some(self.lines);
        }
        if let Some(n) = self.not_utf8 {
            return Err(format!("line {n} is not UTF-8 text"));
        }
        if self.objects == 0 {
            return Err("no line is a JSON object".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::JsonlCheck;

    fn check(chunks: &[&[u8]]) -> Result<(), String> {
        let mut c = JsonlCheck::default();
        for chunk in chunks {
            c.push(chunk);
        }
        c.finish()
    }

    #[test]
    fn jsonl_is_told_from_other_files_across_chunks() {
        assert_eq!(check(&[b"{\"a\"", b":1}\n{\"b\":2}"]), Ok(()));
        assert_eq!(check(&[b"{bad\n", b"{\"ok\":1}\n"]), Ok(()));
        assert!(check(&[b"a,b,c\n1,2,3\n"]).is_err());
        assert!(check(&[b"[{\"a\":1}]"]).is_err());
        assert!(check(&[b""]).is_err());
        assert!(check(&[b"{\"a\":1}\n\xff\xfe\n"]).is_err());
        // A character cut between chunks is whole.
        let text = "{\"k\": \"caf\u{e9}\"}\n".as_bytes();
        let cut = text.iter().position(|&b| b >= 0x80).expect("non-ASCII") + 1;
        assert_eq!(check(&[&text[..cut], &text[cut..]]), Ok(()));
        assert!(
            check(&[&text[..cut]]).is_err(),
            "a cut character at the end"
        );
        // A line too long to parse counts by its first byte.
        let long = format!("{{\"k\": \"{}\"}}", "x".repeat(super::MAX_CHECKED_LINE));
        assert_eq!(check(&[long.as_bytes()]), Ok(()));
        assert!(check(&[&long.as_bytes()[1..]]).is_err());
    }
}
