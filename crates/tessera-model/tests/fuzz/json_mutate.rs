//! Structural mutations of JSON documents: a node replaced by a hostile
//! value, deleted, or duplicated.

use serde_json::{json, Value};

use super::harness::Rng;

/// JSON pointers of every node under `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let key = k.replace('~', "~0").replace('/', "~1");
                pointers(child, format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// Values that break loaders: extreme numbers, wrong types, huge or deep nests.
fn hostile(rng: &mut Rng) -> Value {
    let deep = (0..200).fold(json!(1), |v, _| json!([v]));
    let choices = [
        Value::Null,
        json!(true),
        json!(0),
        json!(-1),
        json!(1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1e308),
        json!(-1e-308),
        json!(4_294_967_296u64),
        json!(""),
        json!("x".repeat(10_000)),
        json!([]),
        json!({}),
        json!([0, 0, 0]),
        deep,
    ];
    choices[rng.below(choices.len())].clone()
}

/// One mutant of `doc`, and what was done.
pub fn mutate(doc: &Value, rng: &mut Rng) -> (Value, String) {
    let mut out = doc.clone();
    let mut all = Vec::new();
    pointers(&out, String::new(), &mut all);
    let at = all[rng.below(all.len())].clone();
    let (parent, last) = match at.rfind('/') {
        Some(i) => (at[..i].to_string(), at[i + 1..].to_string()),
        None => (String::new(), String::new()),
    };
    let op = rng.below(10);
    if op == 0 && !at.is_empty() {
        if let Some(p) = out.pointer_mut(&parent) {
            match p {
                Value::Object(map) => {
                    map.remove(&last.replace("~1", "/").replace("~0", "~"));
                }
                Value::Array(items) => {
                    if let Ok(i) = last.parse::<usize>() {
                        items.remove(i);
                    }
                }
                _ => {}
            }
        }
        return (out, format!("deleted {at}"));
    }
    if op == 1 {
        if let Some(Value::Array(items)) = out.pointer_mut(&at) {
            let copy = items.clone();
            items.extend(copy);
            return (out, format!("doubled {at}"));
        }
    }
    let value = hostile(rng);
    let what = format!("{at} = {}", short(&value));
    if let Some(slot) = out.pointer_mut(&at) {
        *slot = value;
    }
    (out, what)
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!("{}...", &s[..40])
    } else {
        s
    }
}
