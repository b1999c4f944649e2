//! Pieces of the Lark grammars (llguidance's dialect) that constrain tool
//! calls: the JSON schema of one call to any of the functions, and the shape
//! of a reply under `auto` (free text until the call's opening, then only
//! valid calls).

use serde_json::{json, Value};

use super::Function;

/// What the grammar asks of the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Text, or calls once the call's opening is written.
    Auto,
    /// Calls only.
    Calls,
}

/// How a family's calls open: a plain text, or a special token of the
/// vocabulary (which a grammar names by id: its text is not in the trie).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    Text(&'static str),
    Token(u32),
}

impl Trigger {
    /// The trigger as a Lark grammar item.
    pub fn lark(&self) -> String {
        match self {
            Trigger::Text(t) => lark_str(t),
            Trigger::Token(id) => format!("<[{id}]>"),
        }
    }
}

/// Any text, for `auto` replies before a call.
pub const TEXT: &str = "TEXT: /(.|\\n)*/\n";

/// The rule `body`: one call's JSON object, `{"name": ..., <args_key>: ...}`,
/// to one of `functions`, laid out as `json.dumps` writes it.
pub fn body_rule(functions: &[&Function], args_key: &str) -> String {
    let mut schema = json!({ "anyOf": call_variants(functions, args_key) });
    schema["x-guidance"] = layout();
    format!("body: %json {schema}\n")
}

/// The rule `list`: a JSON list of calls (at most one unless `parallel`).
/// One `%json` for the whole list, so a token that closes one call and
/// starts the next stays within one sub-grammar.
pub fn list_rule(functions: &[&Function], args_key: &str, parallel: bool) -> String {
    let mut schema = json!({
        "type": "array",
        "items": { "anyOf": call_variants(functions, args_key) },
        "minItems": 1,
    });
    if !parallel {
        schema["maxItems"] = json!(1);
    }
    schema["x-guidance"] = layout();
    format!("list: %json {schema}\n")
}

/// The rule `rule`: one JSON value to `schema`, in the calls' layout.
pub fn json_rule(rule: &str, schema: &Value) -> String {
    let mut schema = schema.clone();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("x-guidance".into(), layout());
    }
    format!("{rule}: %json {schema}\n")
}

/// One JSON schema per function: its name, and arguments to its schema.
fn call_variants(functions: &[&Function], args_key: &str) -> Vec<Value> {
    functions
        .iter()
        .map(|f| {
            json!({
                "type": "object",
                "properties": {"name": {"const": f.name}, args_key: f.parameters},
                "required": ["name", args_key],
                "additionalProperties": false,
            })
        })
        .collect()
}

/// Compact JSON with a space after `,` and `:` (free whitespace would let a
/// small model pad forever).
fn layout() -> Value {
    json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
}

/// `start` for a reply whose calls are `trigger` then the rule `rest`: under
/// `auto`, any text or text then the trigger and `rest`. A text trigger
/// fires lazily, at its first occurrence: from there on only calls may
/// follow. A special token cannot occur in text, so it simply ends the text.
pub fn start_rule(mode: Mode, trigger: &Trigger) -> String {
    let trig = trigger.lark();
    match (mode, trigger) {
        (Mode::Calls, _) => format!("start: {trig} rest\n"),
        (Mode::Auto, Trigger::Text(_)) => {
            format!("start: TEXT | opened rest\nopened[lazy]: TEXT {trig}\n{TEXT}")
        }
        (Mode::Auto, Trigger::Token(_)) => {
            format!("start: TEXT | TEXT? {trig} rest\n{TEXT}")
        }
    }
}

/// A Lark string literal (JSON's escapes).
pub fn lark_str(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}
