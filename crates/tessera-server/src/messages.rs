//! Chat messages as OpenAI clients send them, checked and flattened into what
//! a chat template renders: `{role, content: string}` (plus `name`).

use serde_json::{Map, Value};

use crate::error::ApiError;

/// Checks `messages` and flattens content parts into text.
pub fn normalize(messages: &[Value]) -> Result<Vec<Value>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "messages must contain at least one message",
        ));
    }
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| normalize_one(i, m))
        .collect()
}

fn normalize_one(i: usize, message: &Value) -> Result<Value, ApiError> {
    let at = |field: &str| format!("messages[{i}].{field}");
    let Some(obj) = message.as_object() else {
        return Err(ApiError::invalid_param(
            format!("messages[{i}]"),
            format!("messages[{i}] must be an object with 'role' and 'content'"),
        ));
    };
    let role = match obj.get("role").and_then(Value::as_str) {
        // `developer` is OpenAI's newer name for `system`; templates know `system`.
        Some("developer") => "system",
        Some(r @ ("system" | "user" | "assistant" | "tool")) => r,
        Some(other) => {
            return Err(ApiError::invalid_param(
                at("role"),
                format!(
                    "unknown role '{other}' (expected system, developer, user, assistant or tool)"
                ),
            ))
        }
        None => {
            return Err(ApiError::invalid_param(
                at("role"),
                format!("{} is required and must be a string", at("role")),
            ))
        }
    };
    let content = match obj.get("content") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) if role == "assistant" => String::new(),
        Some(Value::Array(parts)) => flatten_parts(i, parts)?,
        _ => {
            return Err(ApiError::invalid_param(
                at("content"),
                format!("{} must be a string or a list of text parts", at("content")),
            ))
        }
    };
    let mut out = Map::new();
    out.insert("role".into(), role.into());
    out.insert("content".into(), content.into());
    for (key, value) in obj {
        match key.as_str() {
            "role" | "content" => {}
            "name" => {
                out.insert(key.clone(), value.clone());
            }
            // Empty leftovers of tool-less clients change nothing.
            "refusal" | "tool_calls" | "function_call" | "audio" if value.is_null() => {}
            "tool_calls" if value.as_array().is_some_and(Vec::is_empty) => {}
            "tool_calls" if role == "assistant" => {
                check_tool_calls(i, value)?;
                out.insert(key.clone(), value.clone());
            }
            "tool_call_id" if role == "tool" && value.is_string() => {
                out.insert(key.clone(), value.clone());
            }
            _ => {
                return Err(ApiError::invalid_param(
                    at(key),
                    format!("'{}' is not supported by tessera", at(key)),
                ))
            }
        }
    }
    Ok(Value::Object(out))
}

/// An assistant's `tool_calls`: `[{id, type: "function", function: {name, arguments}}]`.
fn check_tool_calls(i: usize, value: &Value) -> Result<(), ApiError> {
    let calls = value.as_array().ok_or_else(|| {
        ApiError::invalid_param(
            format!("messages[{i}].tool_calls"),
            format!("messages[{i}].tool_calls must be a list"),
        )
    })?;
    for (j, call) in calls.iter().enumerate() {
        let ok = call.pointer("/function/name").is_some_and(Value::is_string)
            && call
                .pointer("/function/arguments")
                .is_none_or(|a| a.is_string() || a.is_object());
        if !ok {
            let param = format!("messages[{i}].tool_calls[{j}]");
            return Err(ApiError::invalid_param(
                param.clone(),
                format!("{param} must be {{\"function\": {{\"name\": ..., \"arguments\": ...}}}}"),
            ));
        }
    }
    Ok(())
}

fn flatten_parts(i: usize, parts: &[Value]) -> Result<String, ApiError> {
    let mut texts = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let param = format!("messages[{i}].content[{j}]");
        match part.get("type").and_then(Value::as_str) {
            Some("text") => match part.get("text").and_then(Value::as_str) {
                Some(t) => texts.push(t),
                None => {
                    return Err(ApiError::invalid_param(
                        param.clone(),
                        format!("{param}.text must be a string"),
                    ))
                }
            },
            Some(other) => {
                return Err(ApiError::invalid_param(
                    param.clone(),
                    format!(
                        "{param}: content parts of type '{other}' are not supported (text only)"
                    ),
                ))
            }
            None => {
                return Err(ApiError::invalid_param(
                    param.clone(),
                    format!("{param} must be an object with a 'type'"),
                ))
            }
        }
    }
    Ok(texts.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parts_flatten_and_developer_becomes_system() {
        let out = normalize(&[
            json!({"role": "developer", "content": "Be brief."}),
            json!({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "name": "x"}),
            json!({"role": "assistant", "content": null, "tool_calls": []}),
        ])
        .expect("valid");
        assert_eq!(
            out,
            vec![
                json!({"role": "system", "content": "Be brief."}),
                json!({"role": "user", "content": "a\nb", "name": "x"}),
                json!({"role": "assistant", "content": ""}),
            ]
        );
    }

    #[test]
    fn unsupported_shapes_are_named() {
        let cases = [
            (json!({"role": "user"}), "messages[0].content"),
            (
                json!({"role": "wizard", "content": "x"}),
                "messages[0].role",
            ),
            (
                json!({"role": "user", "content": [{"type": "image_url"}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"role": "assistant", "content": "x", "tool_calls": [{}]}),
                "messages[0].tool_calls[0]",
            ),
            (
                json!({"role": "user", "content": "x", "tool_calls": [{"function": {"name": "f"}}]}),
                "messages[0].tool_calls",
            ),
            (json!("hello"), "messages[0]"),
        ];
        for (m, param) in cases {
            let e = normalize(&[m]).expect_err(param);
            assert_eq!(e.param.as_deref(), Some(param));
        }
        assert!(normalize(&[]).is_err());
    }
}
