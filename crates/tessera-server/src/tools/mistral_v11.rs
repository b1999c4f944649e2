//! Mistral's newer tool calls (the templates of its v11+ tokenizers: Mistral
//! Small 3.2, Magistral, Devstral): each call is `[TOOL_CALLS]`, the bare
//! function name, `[ARGS]` and the arguments' JSON object, calls back to
//! back (`[TOOL_CALLS]a[ARGS]{...}[TOOL_CALLS]b[ARGS]{...}`). Some
//! templates write a past call's id between the name and `[ARGS]` as
//! `[CALL_ID]id`; the parser reads it, the grammar never asks for it. All
//! three markers are special tokens in those vocabularies. Call ids are
//! Mistral's nine letters and digits ([`super::mistral::call_id`]).

use super::grammar::{json_rule, lark_str, start_rule, Mode, Trigger};
use super::mistral::TOOL_CALLS;
use super::scan::{CallForm, Frame};
use super::Function;

/// Ends a call's name and opens its arguments.
pub const ARGS: &str = "[ARGS]";
/// Opens a call's id, between its name and [`ARGS`], in some templates.
pub const CALL_ID: &str = "[CALL_ID]";

/// How the calls are framed: each opens with `[TOOL_CALLS]`, which is also
/// what separates one call from the next.
pub const FRAME: Frame = Frame {
    trigger: TOOL_CALLS,
    bare_start: false,
    open: "",
    sep: TOOL_CALLS,
    close: "",
    call: CallForm::Named {
        args: ARGS,
        call_id: CALL_ID,
    },
};

/// Whether a chat template writes calls in this form (rather than v0.3's
/// `[TOOL_CALLS] [{...}]` list): it writes the `[ARGS]` marker.
pub fn template_uses(template: &str) -> bool {
    template.contains(TOOL_CALLS) && template.contains(ARGS)
}

/// The Lark grammar for calls to `functions`: one call, or several back to
/// back when `parallel`; `args` is how `[ARGS]` is written in this vocabulary.
pub fn grammar(
    functions: &[&Function],
    mode: Mode,
    parallel: bool,
    trigger: &Trigger,
    args: &Trigger,
) -> String {
    let more = if parallel {
        format!(" ({} call)*", trigger.lark())
    } else {
        String::new()
    };
    let mut g = format!("{}rest: call{more}\n", start_rule(mode, trigger));
    let alternatives: Vec<String> = (0..functions.len()).map(|i| format!("call{i}")).collect();
    g.push_str(&format!("call: {}\n", alternatives.join(" | ")));
    for (i, f) in functions.iter().enumerate() {
        g.push_str(&format!(
            "call{i}: {} {} args{i}\n",
            lark_str(&f.name),
            args.lark()
        ));
        g.push_str(&json_rule(&format!("args{i}"), &f.parameters));
    }
    g
}
