//! Tool calling on chat completions: `tools`, `tool_choice`,
//! `parallel_tool_calls`. The tools go to the chat template (as transformers
//! passes them), or, for a template without a tool syntax, into a system
//! message that teaches the Hermes syntax. Generation is always constrained:
//! `required` and a named function to calls whose arguments match the
//! function's schema; `auto` to free text until the call's opening, then to
//! such calls. The model's text is parsed back into `tool_calls` by the
//! family's syntax ([`Syntax`]: [`hermes`], [`llama`], [`mistral`],
//! [`mistral_v11`]).

pub mod grammar;
pub mod hermes;
pub mod llama;
pub mod mistral;
pub mod mistral_v11;
mod scan;
mod stream;
mod syntax;

#[cfg(test)]
mod tests;

use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::structured::{valid_name, Requested};
use crate::text::GrammarSpec;
use grammar::Mode;

pub use scan::Frame;
pub use stream::{ParsedCall, ToolEvent, ToolStream};
pub use syntax::{Family, Syntax};

/// One function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub name: String,
    pub description: Option<String>,
    /// Its arguments' JSON schema.
    pub parameters: Value,
}

/// What `tool_choice` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// The model answers in text or calls tools.
    Auto,
    /// The model must call one (or, with `parallel_tool_calls`, several) tools.
    Required,
    /// The model must call this function.
    Named(String),
}

/// A request's tools, when it has any and `tool_choice` is not `none`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    pub functions: Vec<Function>,
    pub choice: Choice,
    pub parallel: bool,
    /// The tools as sent (OpenAI's shape), for the chat template.
    pub raw: Vec<Value>,
}

/// Removes `tools`, `tool_choice` and `parallel_tool_calls` from `body`.
/// `None` when there are no tools or `tool_choice` is `none` (then the model
/// answers in text, and the template still sees no tools, as in vLLM).
pub fn take(body: &mut Map<String, Value>) -> Result<Option<Tools>, ApiError> {
    let tools = body.remove("tools").unwrap_or(Value::Null);
    let choice = body.remove("tool_choice").unwrap_or(Value::Null);
    let parallel = match body.remove("parallel_tool_calls") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "parallel_tool_calls",
                "parallel_tool_calls must be a boolean",
            ))
        }
    };
    let raw = match tools {
        Value::Null => Vec::new(),
        Value::Array(list) => list,
        _ => return Err(ApiError::invalid_param("tools", "tools must be a list")),
    };
    let functions = raw
        .iter()
        .enumerate()
        .map(|(i, t)| function(i, t))
        .collect::<Result<Vec<_>, _>>()?;
    let choice = match &choice {
        Value::Null => (!functions.is_empty()).then_some(Choice::Auto),
        Value::String(s) if s == "none" => None,
        Value::String(s) if s == "auto" => Some(Choice::Auto),
        Value::String(s) if s == "required" => Some(Choice::Required),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        "tool_choice.function.name",
                        "tool_choice.function.name is required",
                    )
                })?;
            if !functions.iter().any(|f| f.name == name) {
                return Err(ApiError::invalid_param(
                    "tool_choice",
                    format!("tool_choice names function '{name}', which is not in tools"),
                ));
            }
            Some(Choice::Named(name.to_string()))
        }
        _ => {
            return Err(ApiError::invalid_param(
                "tool_choice",
                "tool_choice must be 'none', 'auto', 'required' or \
                 {\"type\": \"function\", \"function\": {\"name\": ...}}",
            ))
        }
    };
    let Some(choice) = choice else {
        return Ok(None);
    };
    if functions.is_empty() {
        return Err(ApiError::invalid_param(
            "tool_choice",
            "tool_choice other than 'none' needs at least one tool in tools",
        ));
    }
    Ok(Some(Tools {
        functions,
        choice,
        parallel,
        raw,
    }))
}

/// Reads `tools[i]`: `{"type": "function", "function": {name, description?, parameters?, strict?}}`.
fn function(i: usize, tool: &Value) -> Result<Function, ApiError> {
    let at = |f: &str| format!("tools[{i}].{f}");
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(ApiError::invalid_param(
            at("type"),
            format!("{} must be 'function'", at("type")),
        ));
    }
    let f = tool
        .get("function")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            ApiError::invalid_param(
                at("function"),
                format!("{} must be an object", at("function")),
            )
        })?;
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| valid_name(n))
        .ok_or_else(|| {
            ApiError::invalid_param(
                at("function.name"),
                format!(
                    "{} must be a name of a-z, A-Z, 0-9, '_' and '-', at most 64 characters",
                    at("function.name")
                ),
            )
        })?;
    let parameters = match f.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err(ApiError::invalid_param(
                at("function.parameters"),
                format!("{} must be a JSON schema object", at("function.parameters")),
            ))
        }
    };
    Ok(Function {
        name: name.to_string(),
        description: f
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string),
        parameters,
    })
}

impl Tools {
    /// The constraint in `syntax`: for `required` one call (several with
    /// `parallel_tool_calls`) whose arguments match the function's schema,
    /// for a named function one call to it, for `auto` free text that may
    /// turn into such calls at the call's opening.
    pub fn constraint(&self, syntax: &Syntax) -> Requested {
        let (functions, mode, parallel): (Vec<&Function>, _, _) = match &self.choice {
            Choice::Auto => (self.functions.iter().collect(), Mode::Auto, self.parallel),
            Choice::Required => (self.functions.iter().collect(), Mode::Calls, self.parallel),
            Choice::Named(name) => (
                self.functions.iter().filter(|f| &f.name == name).collect(),
                Mode::Calls,
                false,
            ),
        };
        Requested {
            grammar: GrammarSpec::Lark(syntax.grammar(&functions, mode, parallel)),
            param: "tools".into(),
        }
    }
}

/// Messages as the chat template takes them: an assistant's `tool_calls`
/// with their `arguments` as objects (transformers' templates serialize them
/// with `tojson`), and `tool` messages' `tool_call_id` kept.
pub fn template_messages(messages: Vec<Value>) -> Vec<Value> {
    messages
        .into_iter()
        .map(|mut m| {
            if let Some(calls) = m.get_mut("tool_calls").and_then(Value::as_array_mut) {
                for call in calls {
                    if let Some(args) = call.pointer_mut("/function/arguments") {
                        if let Some(parsed) = args
                            .as_str()
                            .and_then(|s| serde_json::from_str::<Value>(s).ok())
                        {
                            *args = parsed;
                        }
                    }
                }
            }
            m
        })
        .collect()
}

/// For a template that does not render tools: a system message describing
/// them and the call syntax (merged into the first system message), the
/// assistant's past calls written in that syntax, and tool results wrapped as
/// responses.
pub fn messages_without_template_support(messages: Vec<Value>, tools: &Tools) -> Vec<Value> {
    let prompt = hermes::system_prompt(&tools.raw);
    let mut out: Vec<Value> = Vec::with_capacity(messages.len() + 1);
    for mut m in messages {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let content = m
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let new_content = match role.as_str() {
            "assistant" => {
                let mut text = content;
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let f = call.get("function").cloned().unwrap_or(Value::Null);
                    let name = f.get("name").cloned().unwrap_or(Value::Null);
                    let args = f.get("arguments").cloned().unwrap_or(json!({}));
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&hermes::format_call(&name, &args));
                }
                text
            }
            "tool" => format!(
                "{}\n{content}\n{}",
                hermes::RESPONSE_OPEN,
                hermes::RESPONSE_CLOSE
            ),
            _ => content,
        };
        if let Some(obj) = m.as_object_mut() {
            obj.remove("tool_calls");
            obj.remove("tool_call_id");
            obj.insert("content".into(), new_content.into());
        }
        out.push(m);
    }
    match out.first_mut() {
        Some(first) if first.get("role").and_then(Value::as_str) == Some("system") => {
            let old = first.get("content").and_then(Value::as_str).unwrap_or("");
            let merged = format!("{old}\n\n{prompt}");
            first["content"] = merged.trim_start().into();
        }
        _ => out.insert(0, json!({"role": "system", "content": prompt})),
    }
    out
}
