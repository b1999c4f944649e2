//! The tool-call grammars of every family, compiled by llguidance for the
//! default model's vocabulary and walked token by token over fixed replies:
//! under `auto` free text passes, and once a call opens only a call to one of
//! the tools with arguments matching its schema does; `required` allows
//! calls only. The matcher is the reference; a reply it refuses at some token
//! is a reply the model could not have produced.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use tessera::text_model::ModelText;
use tessera_engine::constraint::is_allowed;
use tessera_model::gguf::GgufFile;
use tessera_model::tokenizer::Tokenizer;
use tessera_server::tools::grammar::{Mode, Trigger};
use tessera_server::tools::{Family, Function, Syntax};
use tessera_server::{GrammarSpec, TextModel};

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
);

struct Vocab {
    text: ModelText,
    tokenizer: Arc<Tokenizer>,
    /// Every token's text (special tokens by name).
    pieces: Vec<String>,
}

fn vocab() -> Vocab {
    let path = Path::new(MODEL);
    let file = GgufFile::open(path).expect("the default model (scripts/fetch-model)");
    let tokenizer = Arc::new(Tokenizer::from_gguf(path, file.metadata()).expect("tokenizer"));
    let text = ModelText::new(tokenizer.clone(), None);
    let pieces = (0..tokenizer.vocab_size() as u32)
        .map(|id| text.token_text(id))
        .collect();
    Vocab {
        text,
        tokenizer,
        pieces,
    }
}

fn functions() -> Vec<Function> {
    vec![
        Function {
            name: "get_weather".into(),
            description: None,
            parameters: json!({"type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
                "required": ["city"], "additionalProperties": false}),
        },
        Function {
            name: "get_time".into(),
            description: None,
            parameters: json!({"type": "object", "properties": {"zone": {"type": "string"}},
                "required": ["zone"], "additionalProperties": false}),
        },
    ]
}

/// Whether the grammar takes `reply` whole and may end after it. The reply
/// is fed as the longest token the mask allows that matches its next bytes
/// (llguidance masks some tokens that span two of its lexemes, e.g. `"}`
/// after an enum value; the model then writes the text in shorter ones).
fn accepts(v: &Vocab, lark: &str, reply: &str) -> bool {
    let constraint = v
        .text
        .compile_grammar(&GrammarSpec::Lark(lark.to_string()))
        .unwrap_or_else(|e| panic!("{e}\n{lark}"));
    let mut state = constraint.start();
    let mut mask = Vec::new();
    let mut rest = reply;
    while !rest.is_empty() {
        state.fill_mask(&mut mask).expect("mask");
        let next = (0..v.pieces.len() as u32)
            .filter(|&t| is_allowed(&mask, t))
            .filter(|&t| {
                let piece = &v.pieces[t as usize];
                !piece.is_empty() && !piece.contains('\u{fffd}') && rest.starts_with(piece.as_str())
            })
            .max_by_key(|&t| v.pieces[t as usize].len());
        let Some(token) = next else {
            eprintln!("no allowed token for {rest:?}");
            return false;
        };
        state.commit(token).expect("commit");
        rest = &rest[v.pieces[token as usize].len()..];
    }
    if state.is_finished() {
        return true;
    }
    state.fill_mask(&mut mask).expect("mask");
    v.tokenizer
        .eos_token_ids()
        .iter()
        .any(|&eos| is_allowed(&mask, eos))
}

fn syntax(family: Family, trigger: Trigger) -> Syntax {
    Syntax {
        family,
        trigger,
        args: None,
        template_renders_tools: true,
    }
}

fn check(v: &Vocab, s: &Syntax, mode: Mode, parallel: bool, good: &[&str], bad: &[&str]) {
    let fs = functions();
    let refs: Vec<&Function> = fs.iter().collect();
    let lark = s.grammar(&refs, mode, parallel);
    for reply in good {
        assert!(
            accepts(v, &lark, reply),
            "{s:?} {mode:?} refused:\n{reply}\n{lark}"
        );
    }
    for reply in bad {
        assert!(
            !accepts(v, &lark, reply),
            "{s:?} {mode:?} took:\n{reply}\n{lark}"
        );
    }
}

const PARIS: &str = r#"{"city": "Paris", "unit": "celsius"}"#;

#[test]
fn hermes_auto_is_free_text_until_a_call_opens() {
    let v = vocab();
    let s = Syntax::fallback();
    let call =
        format!("<tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {PARIS}}}\n</tool_call>");
    let time =
        "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\": \"CET\"}}\n</tool_call>";
    let good_auto = [
        "The weather is fine, I think.".to_string(),
        "Use { and } freely: <tool or </tool_call>".to_string(),
        call.clone(),
        format!("Let me check.\n{call}"),
        format!("{call}\n{time}"),
    ];
    let bad_auto = [
        // A call opens: only a tool's name, and arguments to its schema.
        "Sure <tool_call>\nhello".to_string(),
        "<tool_call>\n{\"name\": \"rm_rf\", \"arguments\": {}}\n</tool_call>".to_string(),
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"zone\": \"CET\"}}\n</tool_call>".to_string(),
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"kelvin\"}}\n</tool_call>".to_string(),
        // Nothing but more calls after a call.
        format!("{call}\nThanks!"),
    ];
    let good: Vec<&str> = good_auto.iter().map(String::as_str).collect();
    let bad: Vec<&str> = bad_auto.iter().map(String::as_str).collect();
    check(&v, &s, Mode::Auto, true, &good, &bad);
    // Without parallel calls, one call ends the reply.
    check(
        &v,
        &s,
        Mode::Auto,
        false,
        &[&call],
        &[&format!("{call}\n{time}")],
    );
    check(
        &v,
        &s,
        Mode::Calls,
        true,
        &[&call, &format!("{call}\n{time}")],
        &["Hello", &format!("Hi {call}")],
    );
}

#[test]
fn llama_auto_takes_text_or_json_calls() {
    let v = vocab();
    let s = syntax(Family::Llama3, Trigger::Text("<|python_tag|>"));
    let call = format!("{{\"name\": \"get_weather\", \"parameters\": {PARIS}}}");
    let two = format!("{call}; {{\"name\": \"get_time\", \"parameters\": {{\"zone\": \"UTC\"}}}}");
    check(
        &v,
        &s,
        Mode::Auto,
        true,
        &["It is sunny in {Paris}.", &call, &two],
        &[
            "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}",
            "{\"answer\": 42}",
            &format!("{call} and more"),
        ],
    );
    check(
        &v,
        &s,
        Mode::Calls,
        false,
        &[&call],
        &[&two, "It is sunny."],
    );
}

#[test]
fn a_special_token_opens_the_calls() {
    // SmolLM2's `<|im_start|>` stands in for a special opening token such as
    // Mistral's `[TOOL_CALLS]` or Llama's `<|python_tag|>`.
    let v = vocab();
    let id = v
        .text
        .special_token_id("<|im_start|>")
        .expect("a special token");
    let s = syntax(Family::Mistral, Trigger::Token(id));
    let calls = format!("<|im_start|> [{{\"name\": \"get_weather\", \"arguments\": {PARIS}}}, {{\"name\": \"get_time\", \"arguments\": {{\"zone\": \"UTC\"}}}}]");
    check(
        &v,
        &s,
        Mode::Auto,
        true,
        // The opening written as text is text, not a call.
        &[
            "No call needed.",
            "[TOOL_CALLS] [] is text",
            &calls,
            &format!("Checking.{calls}"),
        ],
        &[
            "<|im_start|> [{\"name\": \"nope\", \"arguments\": {}}]",
            &format!("{calls} more"),
        ],
    );
    let llama = syntax(Family::Llama3, Trigger::Token(id));
    let call = format!("<|im_start|>{{\"name\": \"get_weather\", \"parameters\": {PARIS}}}");
    check(
        &v,
        &llama,
        Mode::Auto,
        false,
        &[&call, "Hello."],
        &["<|im_start|>{\"name\": \"x\"}"],
    );
}

#[test]
fn mistral_v11_calls_are_a_name_then_its_arguments() {
    let v = vocab();
    let mut s = syntax(Family::MistralV11, Trigger::Text("[TOOL_CALLS]"));
    s.args = Some(Trigger::Text("[ARGS]"));
    let call = format!("[TOOL_CALLS]get_weather[ARGS]{PARIS}");
    let two = format!("{call}[TOOL_CALLS]get_time[ARGS]{{\"zone\": \"UTC\"}}");
    check(
        &v,
        &s,
        Mode::Auto,
        true,
        &[
            "No call: get_weather[ARGS] is text.",
            &call,
            &two,
            &format!("Checking.{two}"),
        ],
        &[
            "[TOOL_CALLS]rm_rf[ARGS]{}",
            "[TOOL_CALLS]get_weather {\"city\": \"Paris\"}",
            "[TOOL_CALLS]get_weather[ARGS]{\"zone\": \"UTC\"}",
            "[TOOL_CALLS]get_time[ARGS]{\"zone\": \"UTC\"} and text",
            "[TOOL_CALLS]get_time[CALL_ID]abcDEF123[ARGS]{\"zone\": \"UTC\"}",
        ],
    );
    check(&v, &s, Mode::Calls, false, &[&call], &[&two, "Sunny."]);
    // Both markers as special tokens (SmolLM2's stand in for Mistral's):
    // written as text they are text, not a call.
    let id = |t: &str| v.text.special_token_id(t).expect("a special token");
    let s = Syntax {
        trigger: Trigger::Token(id("<|im_start|>")),
        args: Some(Trigger::Token(id("<file_sep>"))),
        ..s
    };
    let call = format!("<|im_start|>get_weather<file_sep>{PARIS}");
    let two = format!("{call}<|im_start|>get_time<file_sep>{{\"zone\": \"CET\"}}");
    check(
        &v,
        &s,
        Mode::Auto,
        true,
        &["[TOOL_CALLS]get_weather[ARGS]{} is text", &call, &two],
        &[
            "<|im_start|>get_weather[ARGS]{\"city\": \"Paris\"}",
            "<|im_start|>get_time<file_sep>{\"city\": \"Paris\"}",
        ],
    );
    check(&v, &s, Mode::Calls, true, &[&call, &two], &["Hello"]);
}
