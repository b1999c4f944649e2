//! Reads tool calls out of model text, as far as the text goes: every family
//! writes each call as a JSON object `{"name": ..., "arguments": {...}}`
//! (Llama: `"parameters"`) inside a [`Frame`] of fixed texts. The scan works
//! on a prefix, so the stream parser can hand out a call's name and its
//! arguments' text while they are still being generated.

/// How a family frames its calls in text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// The text that starts a block of calls.
    pub trigger: &'static str,
    /// Whether a reply whose first non-blank character is `{` is a block of
    /// calls without the trigger (Llama 3.1's JSON calls).
    pub bare_start: bool,
    /// Text between the trigger and the first call (`[` for Mistral).
    pub open: &'static str,
    /// Text between two calls of a block; empty when a block holds one call.
    pub sep: &'static str,
    /// Text that ends a block; empty when a block ends with its last call.
    pub close: &'static str,
    /// How each call is written.
    pub call: CallForm,
}

/// How one call is written inside its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallForm {
    /// A JSON object `{"name": ..., "arguments": {...}}`.
    Json,
    /// The bare name, then `args` and the arguments' JSON object, with an
    /// optional `call_id` and id between them (Mistral's v11 form,
    /// `get_weather[ARGS]{...}`).
    Named {
        args: &'static str,
        call_id: &'static str,
    },
}

/// One call, as far as the text goes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CallSoFar {
    /// The function's name, once its string is complete.
    pub name: Option<String>,
    /// The arguments' JSON text so far (a prefix of the final text).
    pub arguments: String,
    /// Whether the call's object is complete.
    pub complete: bool,
}

/// Where a block stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockEnd {
    /// More text may continue it.
    Open,
    /// It ended; the bytes it took (its close included).
    Closed(usize),
    /// The text is not a block of calls; the bytes up to the end of its last
    /// complete call.
    Invalid(usize),
}

/// A block of calls read from the text after its trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockScan {
    pub calls: Vec<CallSoFar>,
    pub end: BlockEnd,
}

/// Reads `body` (the text after a trigger) as a block of calls in `frame`.
pub fn scan_block(body: &str, frame: &Frame) -> BlockScan {
    let mut calls = Vec::new();
    let mut valid_to = 0;
    let done = |calls, end| BlockScan { calls, end };
    let mut p = skip_ws(body, 0);
    match literal(&body[p..], frame.open) {
        Lit::Yes => p += frame.open.len(),
        Lit::Partial => return done(calls, BlockEnd::Open),
        Lit::No => return done(calls, BlockEnd::Invalid(0)),
    }
    loop {
        p = skip_ws(body, p);
        if p == body.len() {
            return done(calls, BlockEnd::Open);
        }
        let scanned = match frame.call {
            CallForm::Json => scan_call(&body[p..]),
            CallForm::Named { args, call_id } => scan_named(&body[p..], args, call_id),
        };
        let (call, end) = match scanned {
            Call::Invalid => return done(calls, BlockEnd::Invalid(valid_to)),
            Call::Partial(call) => {
                calls.push(call);
                return done(calls, BlockEnd::Open);
            }
            Call::Complete(call, used) => (call, p + used),
        };
        calls.push(call);
        valid_to = end;
        p = skip_ws(body, end);
        let rest = &body[p..];
        if !frame.sep.is_empty() && rest.starts_with(frame.sep) {
            p += frame.sep.len();
            continue;
        }
        if !frame.close.is_empty() && rest.starts_with(frame.close) {
            return done(calls, BlockEnd::Closed(p + frame.close.len()));
        }
        let may_follow = |lit: &str| !lit.is_empty() && lit.starts_with(rest);
        if rest.is_empty() || may_follow(frame.sep) || may_follow(frame.close) {
            return done(calls, BlockEnd::Open);
        }
        return if frame.close.is_empty() {
            // Text after the calls: the block ended with the last one.
            done(calls, BlockEnd::Closed(end))
        } else {
            done(calls, BlockEnd::Invalid(valid_to))
        };
    }
}

/// Whether `text` starts with `lit`, is a proper prefix of it, or neither.
enum Lit {
    Yes,
    Partial,
    No,
}

fn literal(text: &str, lit: &str) -> Lit {
    if text.starts_with(lit) {
        Lit::Yes
    } else if lit.starts_with(text) {
        Lit::Partial
    } else {
        Lit::No
    }
}

fn skip_ws(s: &str, from: usize) -> usize {
    s[from..]
        .find(|c: char| !c.is_whitespace())
        .map_or(s.len(), |i| from + i)
}

/// A call object read from the start of a text.
enum Call {
    Complete(CallSoFar, usize),
    Partial(CallSoFar),
    Invalid,
}

/// Reads `{"name": ..., "arguments": ...}` (keys in any order; other keys,
/// such as Mistral's `id`, are skipped) from the start of `s`.
fn scan_call(s: &str) -> Call {
    let b = s.as_bytes();
    if b.first() != Some(&b'{') {
        return Call::Invalid;
    }
    let mut call = CallSoFar::default();
    let mut has_args = false;
    let mut p = skip_ws(s, 1);
    if b.get(p) == Some(&b'}') {
        return Call::Invalid;
    }
    loop {
        if p == s.len() {
            return Call::Partial(call);
        }
        let key_end = match scan_value(s, p) {
            Value::Complete(end) if b[p] == b'"' => end,
            Value::Partial if b[p] == b'"' => return Call::Partial(call),
            _ => return Call::Invalid,
        };
        let Ok(key) = serde_json::from_str::<String>(&s[p..key_end]) else {
            return Call::Invalid;
        };
        p = skip_ws(s, key_end);
        match b.get(p) {
            None => return Call::Partial(call),
            Some(b':') => p = skip_ws(s, p + 1),
            Some(_) => return Call::Invalid,
        }
        if p == s.len() {
            return Call::Partial(call);
        }
        let value = scan_value(s, p);
        let end = match value {
            Value::Complete(end) => Some(end),
            Value::Partial => None,
            Value::Invalid => return Call::Invalid,
        };
        match key.as_str() {
            "name" => {
                if let Some(end) = end {
                    match serde_json::from_str::<String>(&s[p..end]) {
                        Ok(name) => call.name = Some(name),
                        Err(_) => return Call::Invalid,
                    }
                }
            }
            "arguments" | "parameters" => {
                if has_args {
                    // A second arguments key would replace text already streamed.
                    return Call::Invalid;
                }
                has_args = true;
                if b[p] == b'"' {
                    // Arguments sent as JSON text: the string's content, once whole.
                    if let Some(end) = end {
                        match serde_json::from_str::<String>(&s[p..end]) {
                            Ok(text) => call.arguments = text,
                            Err(_) => return Call::Invalid,
                        }
                    }
                } else if matches!(b[p], b'{' | b'[') {
                    let text = &s[p..end.unwrap_or(s.len())];
                    if end.is_some() && serde_json::from_str::<serde_json::Value>(text).is_err() {
                        return Call::Invalid;
                    }
                    call.arguments = text.to_string();
                } else {
                    return Call::Invalid;
                }
            }
            _ => {}
        }
        let Some(end) = end else {
            return Call::Partial(call);
        };
        p = skip_ws(s, end);
        match b.get(p) {
            None => return Call::Partial(call),
            Some(b',') => p = skip_ws(s, p + 1),
            Some(b'}') => {
                if call.name.is_none() {
                    return Call::Invalid;
                }
                if !has_args {
                    call.arguments = "{}".into();
                }
                call.complete = true;
                return Call::Complete(call, p + 1);
            }
            Some(_) => return Call::Invalid,
        }
    }
}

/// Reads `name[ARGS]{...}` (or `name[CALL_ID]id[ARGS]{...}`) from the
/// start of `s`. The name counts as complete once the marker after it is.
fn scan_named(s: &str, args: &str, call_id: &str) -> Call {
    let word = |from: usize| {
        s[from..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .map_or(s.len(), |i| from + i)
    };
    let name_end = word(0);
    let rest = &s[name_end..];
    if rest.is_empty() || args.starts_with(rest) || call_id.starts_with(rest) {
        return if name_end == 0 && !rest.is_empty() {
            Call::Invalid
        } else {
            Call::Partial(CallSoFar::default())
        };
    }
    if name_end == 0 {
        return Call::Invalid;
    }
    let mut call = CallSoFar {
        name: Some(s[..name_end].to_string()),
        ..CallSoFar::default()
    };
    let mut p = name_end;
    if rest.starts_with(call_id) {
        p = word(p + call_id.len());
        match literal(&s[p..], args) {
            Lit::Yes => {}
            Lit::Partial => return Call::Partial(call),
            Lit::No => return Call::Invalid,
        }
    } else if !rest.starts_with(args) {
        return Call::Invalid;
    }
    p += args.len();
    if p == s.len() {
        return Call::Partial(call);
    }
    if s.as_bytes()[p] != b'{' {
        return Call::Invalid;
    }
    match scan_value(s, p) {
        Value::Complete(end) => {
            if serde_json::from_str::<serde_json::Value>(&s[p..end]).is_err() {
                return Call::Invalid;
            }
            call.arguments = s[p..end].to_string();
            call.complete = true;
            Call::Complete(call, end)
        }
        Value::Partial => {
            call.arguments = s[p..].to_string();
            Call::Partial(call)
        }
        Value::Invalid => Call::Invalid,
    }
}

/// How far a JSON value starting at `s[p]` goes.
enum Value {
    /// It ends before byte `end`.
    Complete(usize),
    /// The text ends inside it.
    Partial,
    Invalid,
}

/// Finds the end of the JSON value at `s[p]` by its brackets and strings
/// (values that end are checked by serde_json where it matters).
fn scan_value(s: &str, p: usize) -> Value {
    let b = s.as_bytes();
    match b[p] {
        b'"' => match string_end(b, p) {
            Some(Ok(end)) => Value::Complete(end),
            Some(Err(())) => Value::Invalid,
            None => Value::Partial,
        },
        b'{' | b'[' => {
            let mut stack = Vec::new();
            let mut i = p;
            while i < b.len() {
                match b[i] {
                    b'"' => match string_end(b, i) {
                        Some(Ok(end)) => {
                            i = end;
                            continue;
                        }
                        Some(Err(())) => return Value::Invalid,
                        None => return Value::Partial,
                    },
                    c @ (b'{' | b'[') => stack.push(if c == b'{' { b'}' } else { b']' }),
                    c @ (b'}' | b']') => {
                        if stack.pop() != Some(c) {
                            return Value::Invalid;
                        }
                        if stack.is_empty() {
                            return Value::Complete(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            Value::Partial
        }
        _ => {
            let end = s[p..]
                .find(|c: char| c.is_whitespace() || matches!(c, ',' | '}' | ']'))
                .map(|i| p + i);
            match end {
                None => Value::Partial,
                Some(end) if serde_json::from_str::<serde_json::Value>(&s[p..end]).is_ok() => {
                    Value::Complete(end)
                }
                Some(_) => Value::Invalid,
            }
        }
    }
}

/// The end of the string opening at `b[p]`: `None` while it is open, an
/// error on a raw control character.
fn string_end(b: &[u8], p: usize) -> Option<Result<usize, ()>> {
    let mut i = p + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(Ok(i + 1)),
            c if c < 0x20 => return Some(Err(())),
            _ => i += 1,
        }
    }
    None
}
