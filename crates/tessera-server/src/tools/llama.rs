//! Llama 3.1 / 3.2 JSON tool calls: the reply is the call itself,
//! `{"name": ..., "parameters": {...}}`, optionally after the special
//! `<|python_tag|>` token; several calls are separated by `; `.

use super::grammar::{body_rule, lark_str, Mode, Trigger};
use super::scan::{CallForm, Frame};
use super::Function;

/// The special token that may open a call.
pub const PYTHON_TAG: &str = "<|python_tag|>";

/// How the calls are framed: JSON objects from the start of the reply (or
/// after `<|python_tag|>`), `;` between them.
pub const FRAME: Frame = Frame {
    trigger: PYTHON_TAG,
    bare_start: true,
    open: "",
    sep: ";",
    close: "",
    call: CallForm::Json,
};

/// The Lark grammar for calls to `functions`. Under [`Mode::Auto`] a text
/// reply may not start with `{` (that starts a call), as in llguidance's
/// own Llama example; `python_tag` is the tag's token when the vocabulary
/// has it.
pub fn grammar(
    functions: &[&Function],
    mode: Mode,
    parallel: bool,
    python_tag: Option<&Trigger>,
) -> String {
    let sep = lark_str("; ");
    let calls = if parallel {
        format!("body ({sep} body)*")
    } else {
        "body".to_string()
    };
    let start = match (mode, python_tag) {
        (Mode::Calls, _) => "start: calls\n".to_string(),
        (Mode::Auto, None) => "start: PLAIN | calls\nPLAIN: /[^{ \\t\\n](.|\\n)*/\n".to_string(),
        (Mode::Auto, Some(tag)) => format!(
            "start: PLAIN | calls | {} calls\nPLAIN: /[^{{ \\t\\n](.|\\n)*/\n",
            tag.lark()
        ),
    };
    format!(
        "{start}calls: {calls}\n{}",
        body_rule(functions, "parameters")
    )
}
