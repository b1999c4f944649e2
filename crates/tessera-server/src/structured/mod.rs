//! Structured output requests: OpenAI's `response_format` (chat), vLLM's
//! `structured_outputs` and its older `guided_*` aliases (chat and
//! completions), read from the body and compiled by the model's text side
//! into an engine constraint. A bad schema, regex or grammar is a 400 naming
//! the field.

use serde_json::{Map, Value};
use tessera_engine::Constraint;

use crate::error::ApiError;
use crate::text::{GrammarSpec, TextModel};

/// A constraint asked for, and the request field it came from (for errors).
#[derive(Debug, Clone, PartialEq)]
pub struct Requested {
    pub grammar: GrammarSpec,
    pub param: String,
}

impl Requested {
    fn new(grammar: GrammarSpec, param: impl Into<String>) -> Self {
        Self {
            grammar,
            param: param.into(),
        }
    }

    /// Whether it asks for JSON (a schema or any object).
    pub fn is_json(&self) -> bool {
        matches!(
            self.grammar,
            GrammarSpec::JsonSchema(_) | GrammarSpec::JsonObject
        )
    }

    /// Compiles the grammar for `text`'s vocabulary; errors name the field.
    pub fn compile(&self, text: &dyn TextModel) -> Result<Constraint, ApiError> {
        text.compile_grammar(&self.grammar)
            .map_err(|e| ApiError::invalid_param(&self.param, format!("{}: {e}", self.param)))
    }
}

/// vLLM's older top-level names and the `structured_outputs` key each means.
const GUIDED: &[(&str, &str)] = &[
    ("guided_json", "json"),
    ("guided_regex", "regex"),
    ("guided_choice", "choice"),
    ("guided_grammar", "grammar"),
];

/// Removes the structured-output fields from `body` and returns the
/// constraint they ask for, if any; more than one is an error.
pub fn take(body: &mut Map<String, Value>, chat: bool) -> Result<Option<Requested>, ApiError> {
    let mut found: Vec<Requested> = Vec::new();
    if chat {
        if let Some(v) = body.remove("response_format") {
            found.extend(response_format(&v)?);
        }
    }
    if let Some(v) = body.remove("structured_outputs") {
        found.extend(structured_outputs(&v)?);
    }
    for &(name, key) in GUIDED {
        if let Some(v) = body.remove(name) {
            if !v.is_null() {
                found.push(vllm_kind(key, &v, name)?);
            }
        }
    }
    if found.len() > 1 {
        let names: Vec<&str> = found.iter().map(|r| r.param.as_str()).collect();
        return Err(ApiError::invalid_param(
            &found[1].param,
            format!(
                "only one output constraint may be given, got {}",
                names.join(" and ")
            ),
        ));
    }
    Ok(found.pop())
}

/// OpenAI's `response_format`: `text`, `json_object` or `json_schema`.
fn response_format(v: &Value) -> Result<Option<Requested>, ApiError> {
    if v.is_null() {
        return Ok(None);
    }
    let obj = v.as_object().ok_or_else(|| {
        ApiError::invalid_param("response_format", "response_format must be an object")
    })?;
    let kind = obj.get("type").and_then(Value::as_str);
    let allowed = |keys: &[&str]| -> Result<(), ApiError> {
        match obj.keys().find(|k| !keys.contains(&k.as_str())) {
            Some(k) => Err(ApiError::invalid_param(
                format!("response_format.{k}"),
                format!("unknown field response_format.{k}"),
            )),
            None => Ok(()),
        }
    };
    match kind {
        Some("text") => {
            allowed(&["type"])?;
            Ok(None)
        }
        Some("json_object") => {
            allowed(&["type"])?;
            Ok(Some(Requested::new(
                GrammarSpec::JsonObject,
                "response_format",
            )))
        }
        Some("json_schema") => {
            allowed(&["type", "json_schema"])?;
            let param = "response_format.json_schema";
            let js = obj
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    ApiError::invalid_param(param, format!("{param} must be an object"))
                })?;
            for (k, v) in js {
                let ok = match k.as_str() {
                    "name" => v.as_str().is_some_and(valid_name),
                    "description" => v.is_string(),
                    "strict" => v.is_boolean() || v.is_null(),
                    "schema" => v.is_object() || v.is_boolean(),
                    _ => {
                        return Err(ApiError::invalid_param(
                            format!("{param}.{k}"),
                            format!("unknown field {param}.{k}"),
                        ))
                    }
                };
                if !ok {
                    let want = match k.as_str() {
                        "name" => "a name of a-z, A-Z, 0-9, '_' and '-', at most 64 characters",
                        "description" => "a string",
                        "strict" => "a boolean",
                        _ => "a JSON schema (an object)",
                    };
                    return Err(ApiError::invalid_param(
                        format!("{param}.{k}"),
                        format!("{param}.{k} must be {want}"),
                    ));
                }
            }
            if !js.contains_key("name") {
                return Err(ApiError::invalid_param(
                    format!("{param}.name"),
                    format!("{param}.name is required"),
                ));
            }
            // OpenAI: without a schema, any JSON value.
            let schema = js.get("schema").cloned().unwrap_or(Value::Bool(true));
            Ok(Some(Requested::new(
                GrammarSpec::JsonSchema(schema),
                format!("{param}.schema"),
            )))
        }
        _ => Err(ApiError::invalid_param(
            "response_format.type",
            "response_format.type must be one of 'text', 'json_object', 'json_schema'",
        )),
    }
}

/// OpenAI's rule for schema and function names.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// vLLM's `structured_outputs` object: exactly one of `json`, `regex`,
/// `choice`, `grammar`, `json_object`.
fn structured_outputs(v: &Value) -> Result<Option<Requested>, ApiError> {
    if v.is_null() {
        return Ok(None);
    }
    let obj = v.as_object().ok_or_else(|| {
        ApiError::invalid_param("structured_outputs", "structured_outputs must be an object")
    })?;
    let mut found = Vec::new();
    for (k, value) in obj {
        if value.is_null() {
            continue;
        }
        let param = format!("structured_outputs.{k}");
        match k.as_str() {
            "json" | "regex" | "choice" | "grammar" => found.push(vllm_kind(k, value, &param)?),
            "json_object" => match value {
                Value::Bool(true) => found.push(Requested::new(GrammarSpec::JsonObject, param)),
                Value::Bool(false) => {}
                _ => {
                    return Err(ApiError::invalid_param(
                        &param,
                        format!("{param} must be a boolean"),
                    ))
                }
            },
            _ => {
                return Err(ApiError::invalid_param(
                    &param,
                    format!(
                        "{param} is not supported by tessera (supported: json, regex, choice, \
                         grammar, json_object)"
                    ),
                ))
            }
        }
    }
    if found.len() > 1 {
        return Err(ApiError::invalid_param(
            "structured_outputs",
            "structured_outputs takes exactly one of json, regex, choice, grammar, json_object",
        ));
    }
    Ok(found.pop())
}

/// One vLLM constraint kind's value.
fn vllm_kind(kind: &str, v: &Value, param: &str) -> Result<Requested, ApiError> {
    let bad = |want: &str| ApiError::invalid_param(param, format!("{param} must be {want}"));
    let grammar = match kind {
        // vLLM takes the schema as an object or as its JSON text.
        "json" => match v {
            Value::Object(_) | Value::Bool(_) => GrammarSpec::JsonSchema(v.clone()),
            Value::String(s) => GrammarSpec::JsonSchema(serde_json::from_str(s).map_err(|e| {
                ApiError::invalid_param(param, format!("{param}: not valid JSON: {e}"))
            })?),
            _ => return Err(bad("a JSON schema (an object or its JSON text)")),
        },
        "regex" => GrammarSpec::Regex(v.as_str().ok_or_else(|| bad("a string"))?.to_string()),
        "grammar" => GrammarSpec::Lark(v.as_str().ok_or_else(|| bad("a string"))?.to_string()),
        _ => {
            let choices = v
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|c| c.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                })
                .filter(|c| !c.is_empty())
                .ok_or_else(|| bad("a non-empty list of strings"))?;
            GrammarSpec::Choice(choices)
        }
    };
    Ok(Requested::new(grammar, param))
}

#[cfg(test)]
mod tests;
