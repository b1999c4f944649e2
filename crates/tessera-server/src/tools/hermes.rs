//! The Hermes / Qwen tool-call syntax, also what tessera teaches a model whose
//! template has no tool support (SmolLM2's ChatML): each call is
//! `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, and tool
//! results come back as `<tool_response>...</tool_response>`.

use serde_json::Value;

use super::grammar::{body_rule, start_rule, Mode, Trigger};
use super::scan::{CallForm, Frame};
use super::Function;

/// Opens a call.
pub const OPEN: &str = "<tool_call>";
/// Closes a call.
pub const CLOSE: &str = "</tool_call>";
/// How the calls are framed: each in its own `<tool_call>` block.
pub const FRAME: Frame = Frame {
    trigger: OPEN,
    bare_start: false,
    open: "",
    sep: "",
    close: CLOSE,
    call: CallForm::Json,
};
/// Wraps a tool's result in the fallback prompt.
pub const RESPONSE_OPEN: &str = "<tool_response>";
/// Ends a tool's result.
pub const RESPONSE_CLOSE: &str = "</tool_response>";

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

/// The Lark grammar for calls to `functions`: under [`Mode::Calls`] one call
/// (several, a line apart, when `parallel`); under [`Mode::Auto`] text first.
pub fn grammar(functions: &[&Function], mode: Mode, parallel: bool, trigger: &Trigger) -> String {
    let trig = trigger.lark();
    let call = format!("\"\\n\" body \"\\n{CLOSE}\"");
    let more = if parallel {
        format!(" (\"\\n\" {trig} {call})*")
    } else {
        String::new()
    };
    format!(
        "{}rest: {call}{more}\n{}",
        start_rule(mode, trigger),
        body_rule(functions, "arguments")
    )
}
