//! The Hermes / Qwen tool-call syntax, also what tessera teaches a model whose
//! template has no tool support (SmolLM2's ChatML): each call is
//! `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, and tool
//! results come back as `<tool_response>...</tool_response>`.

use serde_json::{json, Value};

use super::Function;

/// Opens a call.
pub const OPEN: &str = "<tool_call>";
/// Closes a call.
pub const CLOSE: &str = "</tool_call>";
/// Wraps a tool's result in the fallback prompt.
pub const RESPONSE_OPEN: &str = "<tool_response>";
/// Ends a tool's result.
pub const RESPONSE_CLOSE: &str = "</tool_response>";

/// A call read back from the model's text.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedCall {
    pub name: String,
    /// The arguments as JSON text (OpenAI sends them as a string).
    pub arguments: String,
}

/// One call written in the syntax (for past turns in the fallback prompt).
pub fn format_call(name: &Value, arguments: &Value) -> String {
    let args = match arguments {
        // OpenAI sends arguments as JSON text; write the object when it is one.
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| arguments.clone()),
        other => other.clone(),
    };
    // Written by hand: the key order is the syntax's, whatever serde_json's map keeps.
    format!("{OPEN}\n{{\"name\": {name}, \"arguments\": {args}}}\n{CLOSE}")
}

/// The system prompt that describes `tools` (as sent) and the call syntax:
/// Qwen2.5's own wording, so models trained on it recognise it.
pub fn system_prompt(tools: &[Value]) -> String {
    let mut s = String::from(
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
    );
    for t in tools {
        s.push('\n');
        s.push_str(&t.to_string());
    }
    s.push_str(
        "\n</tools>\n\nFor each function call, return a json object with function name and \
         arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n\
         {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    );
    s
}

/// A Lark grammar (llguidance's dialect) for one call, or several on their
/// own lines when `parallel`, to one of `functions`, arguments matching its
/// schema.
pub fn grammar(functions: &[&Function], parallel: bool) -> String {
    let variants: Vec<Value> = functions
        .iter()
        .map(|f| {
            json!({
                "type": "object",
                "properties": {"name": {"const": f.name}, "arguments": f.parameters},
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    let schema = json!({
        "anyOf": variants,
        "x-guidance": {"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "},
    });
    let start = if parallel {
        "start: call (\"\\n\" call)*"
    } else {
        "start: call"
    };
    format!(
        "{start}\ncall: {} body {}\nbody: %json {schema}\n",
        lark_str(&format!("{OPEN}\n")),
        lark_str(&format!("\n{CLOSE}")),
    )
}

/// A Lark string literal (JSON's escapes).
fn lark_str(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// How far the text after an opening `<tool_call>` has got.
#[derive(Debug, Clone, PartialEq)]
pub enum Scan {
    /// A JSON value then `</tool_call>`: the call (`None` if the value is not
    /// `{"name": ..., "arguments": ...}`) and the bytes it took, the close included.
    Complete(Option<ParsedCall>, usize),
    /// More text is needed.
    Incomplete,
    /// Not a call (not JSON, or something other than the close after it).
    Invalid,
}

/// Reads a call from `body`, the text after `<tool_call>`. The call ends
/// where its JSON value does, so a `</tool_call>` inside a string is not
/// taken for the close.
pub fn scan_call(body: &str) -> Scan {
    let mut values = serde_json::Deserializer::from_str(body).into_iter::<Value>();
    match values.next() {
        None => Scan::Incomplete,
        Some(Err(e)) if e.is_eof() => Scan::Incomplete,
        Some(Err(_)) => Scan::Invalid,
        Some(Ok(value)) => {
            let end = values.byte_offset();
            let rest = &body[end..];
            let after = rest.trim_start();
            if after.starts_with(CLOSE) {
                let used = end + (rest.len() - after.len()) + CLOSE.len();
                Scan::Complete(call_of(&value), used)
            } else if CLOSE.starts_with(after) {
                Scan::Incomplete
            } else {
                Scan::Invalid
            }
        }
    }
}

/// A call's JSON (`{"name": ..., "arguments": ...}`) as a call.
fn call_of(v: &Value) -> Option<ParsedCall> {
    let name = v.get("name")?.as_str()?.to_string();
    let arguments = match v.get("arguments").or_else(|| v.get("parameters")) {
        None | Some(Value::Null) => "{}".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    Some(ParsedCall { name, arguments })
}

/// Splits a whole reply into its text and its calls. Text around the calls is
/// the content (`None` when only whitespace is left). A block that does not
/// parse as a call stays text.
pub fn parse(text: &str) -> (Option<String>, Vec<ParsedCall>) {
    let mut calls = Vec::new();
    let mut content = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        match scan_call(after) {
            Scan::Complete(Some(call), used) => {
                content.push_str(&rest[..start]);
                calls.push(call);
                rest = &after[used..];
            }
            Scan::Complete(None, used) => {
                content.push_str(&rest[..start + OPEN.len() + used]);
                rest = &after[used..];
            }
            Scan::Incomplete | Scan::Invalid => {
                content.push_str(&rest[..start + OPEN.len()]);
                rest = after;
            }
        }
    }
    content.push_str(rest);
    if calls.is_empty() {
        return (Some(text.to_string()), calls);
    }
    let trimmed = content.trim();
    ((!trimmed.is_empty()).then(|| trimmed.to_string()), calls)
}
