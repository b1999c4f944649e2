//! Mistral tool calls (the v0.3 template's form): `[TOOL_CALLS]` (a special
//! token in v0.3's vocabulary) then a JSON list of calls,
//! `[{"name": ..., "arguments": {...}}, ...]`. Mistral's template also wants
//! call ids of exactly nine letters and digits.

use rand::Rng;

use super::grammar::{list_rule, start_rule, Mode, Trigger};
use super::scan::{CallForm, Frame};
use super::Function;

/// Opens the calls.
pub const TOOL_CALLS: &str = "[TOOL_CALLS]";

/// How the calls are framed: one list after the trigger.
pub const FRAME: Frame = Frame {
    trigger: TOOL_CALLS,
    bare_start: false,
    open: "[",
    sep: ",",
    close: "]",
    call: CallForm::Json,
};

/// The Lark grammar for calls to `functions`: the list holds one call, or
/// any number when `parallel`.
pub fn grammar(functions: &[&Function], mode: Mode, parallel: bool, trigger: &Trigger) -> String {
    format!(
        "{}rest: \" \" list\n{}",
        start_rule(mode, trigger),
        list_rule(functions, "arguments", parallel)
    )
}

/// A call id as Mistral's template accepts it: nine letters and digits.
pub fn call_id() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..9)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}
