//! The request side of tools (reading `tools` / `tool_choice`, the fallback
//! system prompt, the grammars' shape) and each family's parser on fixed
//! texts: whole, streamed in pieces of every size, several calls, malformed.

use serde_json::json;

use super::grammar::{Mode, Trigger};
use super::*;

mod mistral_v11_calls;

fn call(name: &str, arguments: &str) -> ParsedCall {
    ParsedCall {
        name: name.into(),
        arguments: arguments.into(),
    }
}

fn syntax(family: Family) -> Syntax {
    let opening = match family {
        Family::Hermes => hermes::OPEN,
        Family::Llama3 => llama::PYTHON_TAG,
        Family::Mistral | Family::MistralV11 => mistral::TOOL_CALLS,
    };
    Syntax {
        family,
        trigger: Trigger::Text(opening),
        args: (family == Family::MistralV11).then_some(Trigger::Text(mistral_v11::ARGS)),
        template_renders_tools: true,
    }
}

/// Feeds `text` in pieces of `size` bytes (on char boundaries).
fn stream_in(s: &Syntax, text: &str, size: usize) -> Vec<ToolEvent> {
    let mut parser = s.stream();
    let mut events = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = size.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        events.extend(parser.push(&rest[..cut]));
        rest = &rest[cut..];
    }
    events.extend(parser.finish());
    events
}

/// Content concatenated, and per call its name and arguments; checks the
/// order OpenAI streams them in (a call's start before its arguments, calls
/// in index order).
fn assemble(events: &[ToolEvent]) -> (String, Vec<ParsedCall>) {
    let mut content = String::new();
    let mut calls: Vec<ParsedCall> = Vec::new();
    for e in events {
        match e {
            ToolEvent::Content(t) => content.push_str(t),
            ToolEvent::Start { index, name } => {
                assert_eq!(*index, calls.len(), "calls start in order");
                calls.push(call(name, ""));
            }
            ToolEvent::Arguments { index, fragment } => {
                assert_eq!(*index + 1, calls.len(), "arguments of the latest call");
                calls[*index].arguments.push_str(fragment);
            }
        }
    }
    (content, calls)
}

/// Every piece size gives the whole-text parse's calls, and the content
/// (trimmed) the whole-text parse's content.
fn streams_like_whole(s: &Syntax, text: &str) {
    let (whole_content, whole_calls) = s.parse(text);
    for size in 1..=text.len().min(40) {
        let (content, calls) = assemble(&stream_in(s, text, size));
        assert_eq!(calls, whole_calls, "size {size}: {text}");
        let content = content.trim();
        let expected = whole_content.as_deref().map_or("", str::trim);
        assert_eq!(content, expected, "size {size}: {text}");
    }
}

const ARGS_PARIS: &str = r#"{"city": "Paris", "unit": "celsius"}"#;

#[test]
fn hermes_replies_split_into_text_and_calls() {
    let s = syntax(Family::Hermes);
    let one = format!(
        "<tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {ARGS_PARIS}}}\n</tool_call>"
    );
    assert_eq!(s.parse(&one), (None, vec![call("get_weather", ARGS_PARIS)]));
    let two = format!("Let me check.\n{one}\n<tool_call>\n{{\"name\": \"time\", \"arguments\": {{}}}}\n</tool_call>");
    assert_eq!(
        s.parse(&two),
        (
            Some("Let me check.".into()),
            vec![call("get_weather", ARGS_PARIS), call("time", "{}")]
        )
    );
    // A close inside a string is part of the string; arguments sent as a
    // JSON string are that string's text.
    let inside = "<tool_call>\n{\"arguments\": \"{\\\"s\\\": 1}\", \"name\": \"f\"}</tool_call> <tool_call>{\"name\": \"g\", \"arguments\": {\"s\": \"a</tool_call>b\"}}</tool_call>";
    assert_eq!(
        s.parse(inside),
        (
            None,
            vec![
                call("f", "{\"s\": 1}"),
                call("g", "{\"s\": \"a</tool_call>b\"}")
            ]
        )
    );
    for text in [one.as_str(), two.as_str(), inside] {
        streams_like_whole(&s, text);
    }
}

#[test]
fn llama_replies_split_into_text_and_calls() {
    let s = syntax(Family::Llama3);
    let one = format!("{{\"name\": \"get_weather\", \"parameters\": {ARGS_PARIS}}}");
    assert_eq!(s.parse(&one), (None, vec![call("get_weather", ARGS_PARIS)]));
    let tagged = format!(
        "<|python_tag|>{one}; {{\"name\": \"time\", \"parameters\": {{\"zone\": \"CET\"}}}}"
    );
    assert_eq!(
        s.parse(&tagged),
        (
            None,
            vec![
                call("get_weather", ARGS_PARIS),
                call("time", "{\"zone\": \"CET\"}")
            ]
        )
    );
    // Leading whitespace before a bare call; text after it is content.
    let spaced = format!("\n {one}\nDone.");
    assert_eq!(
        s.parse(&spaced),
        (Some("Done.".into()), vec![call("get_weather", ARGS_PARIS)])
    );
    // A reply that starts with text is text, braces and all.
    let text = "It is {\"name\": \"x\"} in JSON.";
    assert_eq!(s.parse(text), (Some(text.into()), vec![]));
    for text in [one.as_str(), tagged.as_str(), spaced.as_str(), text] {
        streams_like_whole(&s, text);
    }
}

#[test]
fn mistral_replies_split_into_text_and_calls() {
    let s = syntax(Family::Mistral);
    let two = format!("[TOOL_CALLS] [{{\"name\": \"get_weather\", \"arguments\": {ARGS_PARIS}, \"id\": \"abcDEF123\"}}, {{\"name\": \"time\", \"arguments\": {{}}}}]");
    assert_eq!(
        s.parse(&two),
        (
            None,
            vec![call("get_weather", ARGS_PARIS), call("time", "{}")]
        )
    );
    let after_text =
        "Checking.[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"a\": [1, {\"b\": null}]}}]";
    assert_eq!(
        s.parse(after_text),
        (
            Some("Checking.".into()),
            vec![call("f", "{\"a\": [1, {\"b\": null}]}")]
        )
    );
    for text in [two.as_str(), after_text] {
        streams_like_whole(&s, text);
    }
    assert_eq!(mistral::call_id().len(), 9);
    assert!(mistral::call_id()
        .chars()
        .all(|c| c.is_ascii_alphanumeric()));
}

/// (family, text, whether the text goes wrong only after a complete name:
/// a streamed name cannot be taken back, so there only the whole reply
/// stays text).
const MALFORMED: &[(Family, &str, bool)] = &[
    (
        Family::Hermes,
        "Use <tool_call>like this</tool_call> and <tool_call> unfinished",
        false,
    ),
    (
        Family::Hermes,
        "<tool_call>{\"name\": 3, \"arguments\": {}}</tool_call>",
        false,
    ),
    (
        Family::Hermes,
        "<tool_call>{\"arguments\": {}}</tool_call>",
        false,
    ),
    (
        Family::Hermes,
        "<tool_call>{\"name\": \"f\", \"arguments\": {]}</tool_call>",
        true,
    ),
    (
        Family::Hermes,
        "<tool_call>{\"name\": \"f\"} trailing",
        true,
    ),
    (
        Family::Hermes,
        "<tool_call>{\"name\": \"f\\u00e9\u{7}",
        false,
    ),
    (
        Family::Hermes,
        "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": \"é\"}, \"arguments\": {\"b\": 1}}</tool_call>",
        true,
    ),
    (Family::Llama3, "{not json at all", false),
    (
        Family::Llama3,
        "{\"name\": \"f\", \"parameters\": 12}",
        true,
    ),
    (Family::Mistral, "[TOOL_CALLS] {\"name\": \"f\"}", false),
    (
        Family::Mistral,
        "[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {}} {\"x\"]",
        true,
    ),
    (Family::Mistral, "[TOOL_CALLS", false),
    (Family::MistralV11, "[TOOL_CALLS]get weather[ARGS]{}", false),
    (Family::MistralV11, "[TOOL_CALLS][ARGS]{}", false),
    (Family::MistralV11, "[TOOL_CALLS]f[ARGS] [1]", true),
    (Family::MistralV11, "[TOOL_CALLS]f[ARGS]{\"a\": }", true),
    (
        Family::MistralV11,
        "[TOOL_CALLS]f[CALL_ID]x y[ARGS]{}",
        true,
    ),
    (Family::MistralV11, "[TOOL_CALLS]get_weath", false),
];

#[test]
fn malformed_calls_stay_text_and_never_panic() {
    for &(family, text, late) in MALFORMED {
        let s = syntax(family);
        let (content, calls) = s.parse(text);
        assert!(calls.is_empty(), "{family:?}: {text} gave {calls:?}");
        assert_eq!(content.as_deref(), Some(text), "{family:?}");
        for size in 1..=text.len() {
            let (content, calls) = assemble(&stream_in(&s, text, size));
            if !late {
                assert!(calls.is_empty(), "{family:?} size {size}: {text}");
                assert_eq!(content, text, "{family:?} size {size}");
            }
        }
    }
}

#[test]
fn arguments_stream_out_in_pieces_as_they_arrive() {
    let s = syntax(Family::Hermes);
    let mut p = s.stream();
    assert_eq!(p.push("<tool_"), vec![]);
    assert_eq!(p.push("call>\n{\"name\": \"f"), vec![]);
    assert_eq!(
        p.push("oo\", \"argu"),
        vec![ToolEvent::Start {
            index: 0,
            name: "foo".into()
        }]
    );
    assert_eq!(p.push("ments\": "), vec![]);
    let piece = |fragment: &str| {
        vec![ToolEvent::Arguments {
            index: 0,
            fragment: fragment.into(),
        }]
    };
    assert_eq!(p.push("{\"city\": \"Par"), piece("{\"city\": \"Par"));
    assert_eq!(p.push("is\"}"), piece("is\"}"));
    assert_eq!(p.push("}\n</tool_call>"), vec![]);
    assert_eq!(p.finish(), vec![]);
    // Text that only looked like a call's start goes out at the end.
    let mut p = s.stream();
    assert_eq!(p.push("a <tool"), vec![ToolEvent::Content("a ".into())]);
    assert_eq!(p.finish(), vec![ToolEvent::Content("<tool".into())]);
}

#[test]
fn families_are_told_from_their_templates() {
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/templates/"
    );
    let read = |name: &str| std::fs::read_to_string(format!("{fixtures}{name}")).expect(name);
    assert_eq!(
        Family::detect(&read("qwen2.5-instruct.jinja"), "qwen"),
        Some(Family::Hermes)
    );
    assert_eq!(
        Family::detect(&read("mistral-7b-instruct-v0.3.jinja"), "m"),
        Some(Family::Mistral)
    );
    // The v11+ templates write `[TOOL_CALLS]` + name + `[ARGS]` (some with
    // `[CALL_ID]` + id between): the newer form, whatever the model's name.
    let v11 = "{%- for tool in message['tool_calls'] %}{{- '[TOOL_CALLS]' + \
               tool['function']['name'] + '[ARGS]' + arguments }}{%- endfor %}";
    assert_eq!(Family::detect(v11, "mistral"), Some(Family::MistralV11));
    let v11_id = "{{- '[TOOL_CALLS]' + tool_call.function.name }}{{- '[CALL_ID]' + \
                  tool_call.id }}{{- '[ARGS]' + tool_call['function']['arguments']|tojson }}";
    assert_eq!(Family::detect(v11_id, "m"), Some(Family::MistralV11));
    // Llama 3 (not 3.1) has no tools: tessera's fallback.
    assert_eq!(
        Family::detect(&read("llama3-instruct.jinja"), "llama-3-8b"),
        None
    );
    let chatml = "{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}";
    assert_eq!(Family::detect(chatml, "SmolLM2"), None);
    let with_tools = "{% if tools %}{{ tools | tojson }}{% endif %}";
    assert_eq!(
        Family::detect(with_tools, "Mistral-Nemo"),
        Some(Family::Mistral)
    );
    assert_eq!(Family::detect(with_tools, "unknown"), None);
}

#[test]
fn grammars_follow_the_family_and_the_choice() {
    let f = Function {
        name: "get_weather".into(),
        description: None,
        parameters: json!({"type": "object"}),
    };
    let fs = [&f];
    let hermes = syntax(Family::Hermes).grammar(&fs, Mode::Auto, true);
    assert!(
        hermes.starts_with("start: TEXT | opened rest\nopened[lazy]: TEXT \"<tool_call>\"\n"),
        "{hermes}"
    );
    assert!(hermes.contains("(\"\\n\" \"<tool_call>\""), "{hermes}");
    let mistral = Syntax {
        trigger: Trigger::Token(5),
        ..syntax(Family::Mistral)
    };
    let g = mistral.grammar(&fs, Mode::Calls, false);
    assert!(
        g.starts_with("start: <[5]> rest\nrest: \" \" list\n"),
        "{g}"
    );
    assert!(g.contains("\"maxItems\":1"), "{g}");
    let g = mistral.grammar(&fs, Mode::Auto, false);
    assert!(g.starts_with("start: TEXT | TEXT? <[5]> rest\n"), "{g}");
    let llama = syntax(Family::Llama3).grammar(&fs, Mode::Auto, true);
    assert!(llama.starts_with("start: PLAIN | calls\n"), "{llama}");
    assert!(llama.contains("\"parameters\""), "{llama}");
}

fn body(v: serde_json::Value) -> Map<String, Value> {
    v.as_object().cloned().expect("object")
}

#[test]
fn tool_requests_are_read_and_checked() {
    let weather = json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}});
    let mut b =
        body(json!({"tools": [weather], "tool_choice": "required", "parallel_tool_calls": false}));
    let t = take(&mut b).expect("ok").expect("tools");
    assert!(b.is_empty());
    assert_eq!(t.choice, Choice::Required);
    assert!(!t.parallel);
    let Requested {
        grammar: GrammarSpec::Lark(lark),
        param,
    } = t.constraint(&Syntax::fallback())
    else {
        panic!("a grammar")
    };
    assert_eq!(param, "tools");
    assert!(lark.contains("\"const\":\"get_weather\""), "{lark}");
    assert!(lark.starts_with("start: \"<tool_call>\" rest\n"), "{lark}");
    assert!(
        !lark.contains(")*"),
        "one call without parallel_tool_calls: {lark}"
    );

    let mut b = body(json!({"tools": [weather], "tool_choice": "none"}));
    assert_eq!(take(&mut b).expect("ok"), None);
    let mut b = body(json!({"tools": [weather]}));
    assert_eq!(
        take(&mut b).expect("ok").expect("tools").choice,
        Choice::Auto
    );

    let bad = [
        (
            json!({"tools": [weather], "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice",
        ),
        (json!({"tools": [{"type": "retrieval"}]}), "tools[0].type"),
        (
            json!({"tools": [{"type": "function", "function": {"name": "a b"}}]}),
            "tools[0].function.name",
        ),
        (json!({"tool_choice": "required"}), "tool_choice"),
        (
            json!({"tools": [weather], "tool_choice": "sometimes"}),
            "tool_choice",
        ),
    ];
    for (v, param) in bad {
        let e = take(&mut body(v.clone())).expect_err(&v.to_string());
        assert_eq!(e.param.as_deref(), Some(param), "{v}");
    }
}

#[test]
fn a_template_without_tools_gets_them_in_a_system_message() {
    let weather = json!({"type": "function", "function": {"name": "w"}});
    let mut b = body(json!({"tools": [weather], "tool_choice": "auto"}));
    let t = take(&mut b).expect("ok").expect("tools");
    let messages = vec![
        json!({"role": "user", "content": "Weather?"}),
        json!({"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{\"c\": 1}"}}]}),
        json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"}),
    ];
    let out = messages_without_template_support(messages, &t);
    assert_eq!(out[0]["role"], "system");
    assert!(out[0]["content"]
        .as_str()
        .expect("text")
        .contains("<tools>\n{\"type\":\"function\",\"function\":{\"name\":\"w\"}}\n</tools>"));
    assert_eq!(
        out[2]["content"],
        "<tool_call>\n{\"name\": \"w\", \"arguments\": {\"c\":1}}\n</tool_call>"
    );
    assert_eq!(
        out[3]["content"],
        "<tool_response>\nsunny\n</tool_response>"
    );
    assert!(out[3].get("tool_call_id").is_none());
}

/// A vocabulary where `[TOOL_CALLS]` and `[ARGS]` are special tokens 5
/// and 6, with a template.
struct FakeText(&'static str);

impl crate::text::TextModel for FakeText {
    fn encode(&self, _: &str, _: bool) -> Result<Vec<u32>, String> {
        Ok(Vec::new())
    }

    fn decode(&self, _: &[u32], _: bool) -> Result<String, String> {
        Ok(String::new())
    }

    fn render_chat(&self, _: &[Value], _: bool) -> Result<String, String> {
        Ok(String::new())
    }

    fn chat_template(&self) -> Option<&str> {
        Some(self.0)
    }

    fn special_token_id(&self, text: &str) -> Option<u32> {
        match text {
            mistral::TOOL_CALLS => Some(5),
            mistral_v11::ARGS => Some(6),
            _ => None,
        }
    }
}

#[test]
fn a_models_syntax_takes_its_opening_from_the_vocabulary() {
    let s = Syntax::of_model(&FakeText("{{ '[TOOL_CALLS] [' }}{{ tools }}"), "m");
    assert_eq!(s.family, Family::Mistral);
    assert_eq!(s.trigger, Trigger::Token(5));
    assert!(s.template_renders_tools && s.needs_special_tokens());
    assert_eq!(s.call_id().len(), 9);
    assert_eq!(s.args, None);
    let s = Syntax::of_model(&FakeText("{{ '[TOOL_CALLS]' + name + '[ARGS]' }}"), "m");
    assert_eq!(s.family, Family::MistralV11);
    assert_eq!(
        (s.trigger.clone(), s.args.clone()),
        (Trigger::Token(5), Some(Trigger::Token(6)))
    );
    let g = s.grammar(
        &[&Function {
            name: "f".into(),
            description: None,
            parameters: json!({"type": "object"}),
        }],
        Mode::Calls,
        true,
    );
    assert!(
        g.starts_with("start: <[5]> rest\nrest: call (<[5]> call)*\n"),
        "{g}"
    );
    assert!(
        g.contains("call0: \"f\" <[6]> args0\nargs0: %json {"),
        "{g}"
    );
    assert_eq!(s.call_id().len(), 9);
    let s = Syntax::of_model(&FakeText("{% if tools %}<tool_call>{% endif %}"), "qwen");
    assert_eq!(s.family, Family::Hermes);
    assert_eq!(s.trigger, Trigger::Text(hermes::OPEN));
    assert!(s.template_renders_tools && !s.needs_special_tokens());
    // No tool syntax: Hermes taught by the system prompt.
    let s = Syntax::of_model(&FakeText("<|im_start|>{{ m.content }}"), "SmolLM2");
    assert_eq!(s, Syntax::fallback());
    assert!(s.call_id().starts_with("call_"));
}
