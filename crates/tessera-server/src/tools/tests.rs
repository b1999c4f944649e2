use serde_json::json;

use super::hermes::{parse, ParsedCall};
use super::*;

fn call(name: &str, arguments: &str) -> ParsedCall {
    ParsedCall {
        name: name.into(),
        arguments: arguments.into(),
    }
}

#[test]
fn whole_replies_split_into_text_and_calls() {
    let one = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    assert_eq!(
        parse(one),
        (None, vec![call("get_weather", "{\"city\":\"Paris\"}")])
    );
    let two = format!("Let me check.\n{one}\n<tool_call>\n{{\"name\": \"time\", \"arguments\": {{}}}}\n</tool_call>");
    assert_eq!(
        parse(&two),
        (
            Some("Let me check.".into()),
            vec![
                call("get_weather", "{\"city\":\"Paris\"}"),
                call("time", "{}")
            ]
        )
    );
    // Not a call: stays text.
    let text = "Use <tool_call>like this</tool_call> and <tool_call> unfinished";
    assert_eq!(parse(text), (Some(text.into()), vec![]));
    // A close inside a string is part of the string.
    let inside =
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"s\": \"a</tool_call>b\"}}\n</tool_call>";
    assert_eq!(
        parse(inside),
        (None, vec![call("f", "{\"s\":\"a</tool_call>b\"}")])
    );
}

/// Feeds `text` in pieces of `size` bytes (on char boundaries).
fn stream_in(text: &str, size: usize) -> Vec<ToolEvent> {
    let mut s = ToolStream::default();
    let mut events = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = size.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        events.extend(s.push(&rest[..cut]));
        rest = &rest[cut..];
    }
    events.extend(s.finish());
    events
}

/// Content concatenated, and per call its name and arguments.
fn assemble(events: &[ToolEvent]) -> (String, Vec<(String, String)>) {
    let mut content = String::new();
    let mut calls: Vec<(String, String)> = Vec::new();
    for e in events {
        match e {
            ToolEvent::Content(t) => content.push_str(t),
            ToolEvent::Start { index, name } => {
                assert_eq!(*index, calls.len(), "calls start in order");
                calls.push((name.clone(), String::new()));
            }
            ToolEvent::Arguments { index, fragment } => calls[*index].1.push_str(fragment),
        }
    }
    (content, calls)
}

#[test]
fn streamed_pieces_of_any_size_give_the_same_calls() {
    let text = "Sure: <tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": \"</tool_call>\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {\"y\": \"é\"}}\n</tool_call>";
    for size in [1, 2, 3, 7, 16, 1000] {
        let (content, calls) = assemble(&stream_in(text, size));
        assert_eq!(content, "Sure: ", "size {size}");
        assert_eq!(
            calls,
            vec![
                ("a".into(), "{\"x\":\"</tool_call>\"}".into()),
                ("b".into(), "{\"y\":\"é\"}".into())
            ],
            "size {size}"
        );
    }
}

#[test]
fn a_partial_call_announces_its_name_before_it_closes() {
    let mut s = ToolStream::default();
    assert_eq!(s.push("<tool_"), vec![]);
    assert_eq!(s.push("call>\n{\"name\": \"f"), vec![]);
    assert_eq!(
        s.push("oo\", \"argu"),
        vec![ToolEvent::Start {
            index: 0,
            name: "foo".into()
        }]
    );
    assert_eq!(s.push("ments\": {}}"), vec![]);
    assert_eq!(
        s.push("\n</tool_call>"),
        vec![ToolEvent::Arguments {
            index: 0,
            fragment: "{}".into()
        }]
    );
    // Text that only looked like a call's start goes out at the end.
    let mut s = ToolStream::default();
    assert_eq!(s.push("a <tool"), vec![ToolEvent::Content("a ".into())]);
    assert_eq!(s.finish(), vec![ToolEvent::Content("<tool".into())]);
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
    let Some(Requested {
        grammar: GrammarSpec::Lark(lark),
        param,
    }) = t.constraint()
    else {
        panic!("a grammar")
    };
    assert_eq!(param, "tools");
    assert!(lark.contains("\"const\":\"get_weather\""), "{lark}");
    assert!(lark.starts_with("start: call\n"), "{lark}");

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
