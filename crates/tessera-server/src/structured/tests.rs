use serde_json::json;

use super::*;

fn take_from(body: Value, chat: bool) -> Result<Option<Requested>, ApiError> {
    let Value::Object(mut map) = body else {
        panic!("object")
    };
    let r = take(&mut map, chat);
    if r.is_ok() {
        for k in ["response_format", "structured_outputs", "guided_json"] {
            assert!(!map.contains_key(k), "{k} left in the body");
        }
    }
    r
}

#[test]
fn each_spelling_gives_its_grammar_and_parameter() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let cases = [
        (
            json!({"response_format": {"type": "json_schema",
                   "json_schema": {"name": "x", "schema": schema, "strict": true}}}),
            GrammarSpec::JsonSchema(schema.clone()),
            "response_format.json_schema.schema",
        ),
        (
            json!({"response_format": {"type": "json_object"}}),
            GrammarSpec::JsonObject,
            "response_format",
        ),
        (
            json!({"structured_outputs": {"regex": "a+"}}),
            GrammarSpec::Regex("a+".into()),
            "structured_outputs.regex",
        ),
        (
            json!({"guided_json": schema.to_string()}),
            GrammarSpec::JsonSchema(schema.clone()),
            "guided_json",
        ),
        (
            json!({"guided_choice": ["yes", "no"]}),
            GrammarSpec::Choice(vec!["yes".into(), "no".into()]),
            "guided_choice",
        ),
        (
            json!({"structured_outputs": {"grammar": "start: \"a\""}}),
            GrammarSpec::Lark("start: \"a\"".into()),
            "structured_outputs.grammar",
        ),
    ];
    for (body, grammar, param) in cases {
        let got = take_from(body, true)
            .expect("accepted")
            .expect("a constraint");
        assert_eq!(got, Requested::new(grammar, param));
    }
    assert_eq!(
        take_from(json!({"response_format": {"type": "text"}}), true).expect("ok"),
        None
    );
}

#[test]
fn malformed_requests_name_the_field() {
    let cases = [
        (
            json!({"response_format": {"type": "xml"}}),
            "response_format.type",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}),
            "response_format.json_schema.name",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}}),
            "response_format.json_schema.name",
        ),
        (
            json!({"structured_outputs": {"structural_tag": "x"}}),
            "structured_outputs.structural_tag",
        ),
        (json!({"guided_choice": []}), "guided_choice"),
        (json!({"guided_json": "{not json"}), "guided_json"),
        (
            json!({"guided_regex": "a", "response_format": {"type": "json_object"}}),
            "guided_regex",
        ),
    ];
    for (body, param) in cases {
        let e = take_from(body.clone(), true).expect_err(&body.to_string());
        assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        assert!(e.message.contains(param), "{}", e.message);
    }
}

#[test]
fn completions_leave_response_format_to_the_typed_parse() {
    let Value::Object(mut map) = json!({"response_format": {"type": "json_object"}}) else {
        panic!("object")
    };
    assert_eq!(take(&mut map, false).expect("ok"), None);
    assert!(map.contains_key("response_format"));
}
