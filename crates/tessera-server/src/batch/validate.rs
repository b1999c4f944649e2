//! Checking a batch's input file line by line, as OpenAI does before a
//! batch runs: each problem is reported with its (1-based) line number, and
//! any problem fails the whole batch before anything runs.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

/// A line that may run.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidLine {
    /// 1-based line number.
    pub line: u64,
    /// The client's id of the request.
    pub custom_id: String,
    /// The endpoint it goes to.
    pub url: String,
    /// The request body.
    pub body: Map<String, Value>,
}

/// A problem with one line (OpenAI's `errors.data` entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// What kind of problem.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// The field at fault.
    pub param: Option<&'static str>,
    /// 1-based line number (`None`: the whole file).
    pub line: Option<u64>,
}

impl LineError {
    fn at(line: u64, code: &'static str, param: Option<&'static str>, message: String) -> Self {
        Self {
            code,
            message,
            param,
            line: Some(line),
        }
    }

    /// As OpenAI writes it.
    pub fn to_json(&self) -> Value {
        json!({"code": self.code, "message": self.message, "param": self.param, "line": self.line})
    }
}

/// Checks the lines of a JSONL file (without their `\n`), whose `url`s must
/// be one of `endpoints`;
/// `known_model` says whether a body's `model` names a model of this server.
/// Blank lines are skipped.
pub fn parse_lines(
    raw_lines: impl IntoIterator<Item = Vec<u8>>,
    endpoints: &[&str],
    known_model: impl Fn(Option<&str>) -> bool,
) -> Result<Vec<ValidLine>, Vec<LineError>> {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    for (i, raw) in raw_lines.into_iter().enumerate() {
        let n = i as u64 + 1;
        if raw.trim_ascii().is_empty() {
            continue;
        }
        match check_line(n, &raw, endpoints, &known_model, &mut seen) {
            Ok(line) => lines.push(line),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() && lines.is_empty() {
        errors.push(LineError {
            code: "empty_file",
            message: "The input file has no requests.".into(),
            param: None,
            line: None,
        });
    }
    if errors.is_empty() {
        Ok(lines)
    } else {
        Err(errors)
    }
}

fn check_line(
    n: u64,
    raw: &[u8],
    endpoints: &[&str],
    known_model: &impl Fn(Option<&str>) -> bool,
    seen: &mut HashSet<String>,
) -> Result<ValidLine, LineError> {
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(raw) else {
        return Err(LineError::at(
            n,
            "invalid_json_line",
            None,
            format!("Line {n} is not a JSON object."),
        ));
    };
    let custom_id = match obj.remove("custom_id") {
        Some(Value::String(id)) if !id.is_empty() => id,
        _ => {
            return Err(LineError::at(
                n,
                "missing_custom_id",
                Some("custom_id"),
                format!("Line {n} has no custom_id (a non-empty string)."),
            ))
        }
    };
    if !seen.insert(custom_id.clone()) {
        return Err(LineError::at(
            n,
            "duplicate_custom_id",
            Some("custom_id"),
            format!("Line {n}: the custom_id '{custom_id}' is used by an earlier line."),
        ));
    }
    match obj.get("method") {
        Some(Value::String(m)) if m == "POST" => {}
        _ => {
            return Err(LineError::at(
                n,
                "invalid_method",
                Some("method"),
                format!("Line {n}: method must be \"POST\"."),
            ))
        }
    }
    let url = match obj.get("url") {
        Some(Value::String(u)) if endpoints.contains(&u.as_str()) => u.clone(),
        other => {
            let url = other.map_or("nothing".to_string(), Value::to_string);
            return Err(LineError::at(
                n,
                "mismatched_url",
                Some("url"),
                format!(
                    "Line {n}: url is {url}, expected {}.",
                    endpoints.join(" or ")
                ),
            ));
        }
    };
    let Some(Value::Object(body)) = obj.remove("body") else {
        return Err(LineError::at(
            n,
            "invalid_body",
            Some("body"),
            format!("Line {n}: body must be a JSON object."),
        ));
    };
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(LineError::at(
            n,
            "invalid_body",
            Some("body.stream"),
            format!("Line {n}: streaming is not possible in a batch."),
        ));
    }
    let model = match body.get("model") {
        None => None,
        Some(Value::String(m)) => Some(m.as_str()),
        Some(_) => {
            return Err(LineError::at(
                n,
                "invalid_body",
                Some("body.model"),
                format!("Line {n}: model must be a string."),
            ))
        }
    };
    if !known_model(model) {
        return Err(LineError::at(
            n,
            "model_not_found",
            Some("body.model"),
            format!(
                "Line {n}: the model '{}' does not exist on this server.",
                model.unwrap_or_default()
            ),
        ));
    }
    Ok(ValidLine {
        line: n,
        custom_id,
        url,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, url: &str, body: &str) -> String {
        format!(r#"{{"custom_id":"{id}","method":"POST","url":"{url}","body":{body}}}"#)
    }

    fn split(text: &str) -> Vec<Vec<u8>> {
        text.split('\n').map(|l| l.as_bytes().to_vec()).collect()
    }

    #[test]
    fn every_kind_of_bad_line_is_reported_with_its_number() {
        let ok = |id| line(id, "/v1/completions", r#"{"model":"m","prompt":"x"}"#);
        let text = [
            ok("a"),
            "{not json".to_string(),
            r#"{"method":"POST","url":"/v1/completions","body":{}}"#.to_string(),
            ok("a"),
            line("b", "/v1/chat/completions", r#"{"model":"m"}"#),
            line("c", "/v1/completions", r#"{"model":"nope"}"#),
            line("d", "/v1/completions", "[1]"),
            line("e", "/v1/completions", r#"{"model":"m","stream":true}"#),
            String::new(),
            ok("f"),
        ]
        .join("\n");
        let errors =
            parse_lines(split(&text), &["/v1/completions"], |m| m == Some("m")).unwrap_err();
        let got: Vec<_> = errors.iter().map(|e| (e.line, e.code)).collect();
        assert_eq!(
            got,
            [
                (Some(2), "invalid_json_line"),
                (Some(3), "missing_custom_id"),
                (Some(4), "duplicate_custom_id"),
                (Some(5), "mismatched_url"),
                (Some(6), "model_not_found"),
                (Some(7), "invalid_body"),
                (Some(8), "invalid_body"),
            ]
        );
    }

    #[test]
    fn good_lines_keep_their_numbers_and_bodies() {
        let text = format!(
            "{}\n\n{}\n",
            line("x", "/v1/completions", r#"{"prompt":"p"}"#),
            line("y", "/v1/completions", r#"{"model":"m","prompt":"q"}"#)
        );
        let lines = parse_lines(split(&text), &["/v1/completions"], |_| true).expect("valid");
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0].line, lines[0].custom_id.as_str()), (1, "x"));
        assert_eq!((lines[1].line, lines[1].custom_id.as_str()), (3, "y"));
        assert_eq!(lines[1].body["prompt"], "q");
        let empty = parse_lines(split("\n\n"), &["/v1/completions"], |_| true).unwrap_err();
        assert_eq!(empty[0].code, "empty_file");
    }
}
