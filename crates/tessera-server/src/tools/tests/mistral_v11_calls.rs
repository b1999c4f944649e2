//! Mistral's v11+ call form, `[TOOL_CALLS]name[ARGS]{...}`, on fixed texts:
//! whole, streamed in pieces of every size, with a call id, then text.

use super::*;

#[test]
fn mistral_v11_replies_split_into_text_and_calls() {
    let s = syntax(Family::MistralV11);
    let two = format!("[TOOL_CALLS]get_weather[ARGS]{ARGS_PARIS}[TOOL_CALLS]time[ARGS]{{}}");
    assert_eq!(
        s.parse(&two),
        (
            None,
            vec![call("get_weather", ARGS_PARIS), call("time", "{}")]
        )
    );
    // A past call's id, as some templates write it, is read past.
    let with_id = "Checking.[TOOL_CALLS]f[CALL_ID]abcDEF123[ARGS]{\"a\": [1, {\"b\": \"}\"}]}";
    assert_eq!(
        s.parse(with_id),
        (
            Some("Checking.".into()),
            vec![call("f", "{\"a\": [1, {\"b\": \"}\"}]}")]
        )
    );
    let then_text = "[TOOL_CALLS]f-2[ARGS]{\"x\": 1} done";
    assert_eq!(
        s.parse(then_text),
        (Some("done".into()), vec![call("f-2", "{\"x\": 1}")])
    );
    for text in [two.as_str(), with_id, then_text] {
        streams_like_whole(&s, text);
    }
    // The name goes out as soon as `[ARGS]` ends it, the arguments after.
    let mut p = s.stream();
    assert_eq!(
        p.push("Hm [TOOL_CALLS]get_w"),
        vec![ToolEvent::Content("Hm ".into())]
    );
    assert_eq!(p.push("eather[AR"), vec![]);
    assert_eq!(
        p.push("GS]{\"city\": "),
        vec![
            ToolEvent::Start {
                index: 0,
                name: "get_weather".into()
            },
            ToolEvent::Arguments {
                index: 0,
                fragment: "{\"city\": ".into()
            }
        ]
    );
    assert_eq!(
        p.push("\"Paris\"}"),
        vec![ToolEvent::Arguments {
            index: 0,
            fragment: "\"Paris\"}".into()
        }]
    );
    assert_eq!(p.finish(), vec![]);
}
