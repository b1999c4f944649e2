//! OpenAI request fields tessera does not implement. Each one is either
//! accepted because, as sent, it changes nothing (`metadata`, `functions: []`),
//! or rejected with a 400 that names it. (`response_format` and the other
//! structured-output fields are the `structured` module's, tools the `tools`
//! module's.)
//! Nothing is silently ignored: a field that is neither here nor a field of the
//! endpoint's request type is an unknown-field error.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// Fields that identify the caller or tag the request and never affect the
/// output; accepted with any value.
const NO_OP: &[&str] = &[
    "safety_identifier",
    "prompt_cache_key", // a routing hint; prefix caching is automatic
    "metadata",         // only used with `store`, which must be false
];

/// Checks and removes the fields of `body` that tessera accepts without
/// implementing; errors on any that would change the result.
pub fn strip_unimplemented(body: &mut Map<String, Value>, chat: bool) -> Result<(), ApiError> {
    let keys: Vec<String> = body.keys().cloned().collect();
    for key in keys {
        let value = &body[&key];
        let accepted = if NO_OP.contains(&key.as_str()) {
            true
        } else if let Some(ok) = harmless(&key, value, chat) {
            ok?;
            true
        } else {
            false
        };
        if accepted {
            body.remove(&key);
        }
    }
    Ok(())
}

/// For a known-but-unimplemented field: `Some(Ok)` when its value has no
/// effect, `Some(Err)` when it would; `None` when the field is not one of them.
fn harmless(key: &str, value: &Value, chat: bool) -> Option<Result<(), ApiError>> {
    let absent = value.is_null();
    let ok = |cond: bool, why: &str| {
        if cond {
            Ok(())
        } else {
            Err(ApiError::invalid_param(
                key,
                format!("'{key}' is not supported by tessera: {why}"),
            ))
        }
    };
    let empty_list = value.as_array().is_some_and(Vec::is_empty);
    let result = match key {
        // The legacy names of `tools` and `tool_choice`.
        "functions" if chat => ok(absent || empty_list, "use 'tools' instead"),
        "function_call" if chat => ok(
            absent || matches!(value.as_str(), Some("none")),
            "use 'tool_choice' instead",
        ),
        "modalities" if chat => ok(
            absent
                || value
                    .as_array()
                    .is_some_and(|m| m.iter().all(|x| x == "text")),
            "only text output is supported",
        ),
        "audio" if chat => ok(absent, "only text output is supported"),
        "prediction" if chat => ok(absent, "predicted outputs are not implemented"),
        "reasoning_effort" if chat => ok(absent, "the served model does not reason"),
        "verbosity" if chat => ok(absent, "verbosity control is not implemented"),
        "web_search_options" if chat => ok(absent, "web search is not implemented"),
        "store" if chat => ok(
            absent || value == &Value::Bool(false),
            "completions are not stored",
        ),
        "suffix" if !chat => ok(
            absent || value.as_str() == Some(""),
            "insertion (fill-in-the-middle) is not implemented",
        ),
        _ => return None,
    };
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(body: Value, chat: bool) -> Result<Map<String, Value>, ApiError> {
        let Value::Object(mut map) = body else {
            panic!("object")
        };
        strip_unimplemented(&mut map, chat).map(|()| map)
    }

    #[test]
    fn harmless_values_are_stripped() {
        let left = check(
            json!({"user": "u1", "functions": [], "function_call": "none",
                   "store": false, "temperature": 0.5}),
            true,
        )
        .expect("accepted");
        // `user` is the sampling fields' (it picks a weighted alias's version).
        assert_eq!(
            left,
            json!({"user": "u1", "temperature": 0.5})
                .as_object()
                .cloned()
                .expect("obj")
        );
        assert!(check(json!({"suffix": null}), false).is_ok());
    }

    #[test]
    fn effective_values_are_rejected_by_name() {
        let cases = [
            (json!({"functions": [{"name": "f"}]}), true, "functions"),
            (json!({"function_call": "auto"}), true, "function_call"),
            (json!({"store": true}), true, "store"),
            (json!({"suffix": "end"}), false, "suffix"),
        ];
        for (body, chat, name) in cases {
            let e = check(body, chat).expect_err(name);
            assert_eq!(e.param.as_deref(), Some(name));
            assert!(e.message.contains(name), "{}", e.message);
        }
    }

    #[test]
    fn endpoint_specific_fields_stay_for_the_other_endpoint() {
        // `suffix` on chat is not stripped: the typed parse then calls it unknown.
        let left = check(json!({"suffix": "x"}), true).expect("left alone");
        assert!(left.contains_key("suffix"));
    }
}
