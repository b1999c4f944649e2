//! Tool calls read while the text streams in: text outside calls goes out as
//! content as soon as it cannot be the start of a call; a call's id, type
//! and name go out as soon as its name is complete, its arguments when the
//! call closes, as OpenAI's `delta.tool_calls` do.

use super::hermes::{scan_call, Scan, OPEN};

/// What the stream adds to a choice.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolEvent {
    /// Text outside any call.
    Content(String),
    /// Call `index` begins: its function's name.
    Start { index: usize, name: String },
    /// More of call `index`'s arguments (JSON text).
    Arguments { index: usize, fragment: String },
}

/// One choice's parser state.
#[derive(Debug, Default)]
pub struct ToolStream {
    /// Text not yet handed out.
    pending: String,
    /// Inside a call: its text so far, and whether its start went out.
    call: Option<(String, bool)>,
    /// Calls completed or started.
    calls: usize,
    /// Right after a call: whitespace (the newline between parallel calls)
    /// is not content.
    after_call: bool,
}

impl ToolStream {
    /// Number of calls seen (started) so far.
    pub fn num_calls(&self) -> usize {
        self.calls
    }

    /// Takes in `text` and returns what can be sent now.
    pub fn push(&mut self, text: &str) -> Vec<ToolEvent> {
        self.pending.push_str(text);
        let mut events = Vec::new();
        loop {
            match self.call.take() {
                None => {
                    if self.after_call {
                        let trimmed = self.pending.trim_start();
                        if trimmed.is_empty() {
                            self.pending.clear();
                            return events;
                        }
                        self.pending = trimmed.to_string();
                        self.after_call = false;
                    }
                    if let Some(at) = self.pending.find(OPEN) {
                        let before: String = self.pending.drain(..at + OPEN.len()).collect();
                        push_content(&mut events, &before[..at]);
                        self.call = Some((String::new(), false));
                        continue;
                    }
                    // Hold back what may be the beginning of `<tool_call>`.
                    let keep = partial_suffix(&self.pending, OPEN);
                    let out: String = self.pending.drain(..self.pending.len() - keep).collect();
                    push_content(&mut events, &out);
                    return events;
                }
                Some((mut body, started)) => {
                    let mut started = started;
                    body.push_str(&self.pending);
                    self.pending.clear();
                    if !started {
                        if let Some(name) = complete_name(&body) {
                            events.push(ToolEvent::Start {
                                index: self.calls,
                                name,
                            });
                            self.calls += 1;
                            started = true;
                        }
                    }
                    let (call, used) = match scan_call(&body) {
                        Scan::Incomplete => {
                            self.call = Some((body, started));
                            return events;
                        }
                        Scan::Complete(call, used) => (call, used),
                        Scan::Invalid => (None, 0),
                    };
                    match call {
                        Some(call) => {
                            if !started {
                                events.push(ToolEvent::Start {
                                    index: self.calls,
                                    name: call.name.clone(),
                                });
                                self.calls += 1;
                            }
                            events.push(ToolEvent::Arguments {
                                index: self.calls - 1,
                                fragment: call.arguments,
                            });
                            self.pending = body[used..].to_string();
                        }
                        // Not a call after all (only possible without a
                        // constraint): the text goes out as it was.
                        None if !started => {
                            push_content(&mut events, OPEN);
                            self.pending = body;
                            continue;
                        }
                        None => {
                            events.push(ToolEvent::Arguments {
                                index: self.calls - 1,
                                fragment: "{}".into(),
                            });
                            self.pending = body[used..].to_string();
                        }
                    }
                    self.after_call = true;
                }
            }
        }
    }

    /// At the end of the text: anything held back goes out as content.
    pub fn finish(&mut self) -> Vec<ToolEvent> {
        let mut events = Vec::new();
        let mut text = std::mem::take(&mut self.pending);
        if let Some((body, started)) = self.call.take() {
            if !started {
                text = format!("{OPEN}{body}{text}");
            }
        }
        push_content(&mut events, &text);
        events
    }
}

fn push_content(events: &mut Vec<ToolEvent>, text: &str) {
    if !text.is_empty() {
        events.push(ToolEvent::Content(text.to_string()));
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of `marker`.
fn partial_suffix(text: &str, marker: &str) -> usize {
    (1..marker.len())
        .rev()
        .find(|&n| {
            text.len() >= n
                && text.is_char_boundary(text.len() - n)
                && marker.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

/// The function name of a call whose text starts `{"name": "..."`, once the
/// closing quote has arrived.
fn complete_name(body: &str) -> Option<String> {
    let rest = body.trim_start().strip_prefix('{')?.trim_start();
    let rest = rest
        .strip_prefix("\"name\"")?
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let rest = rest.strip_prefix('"')?;
    let end = rest.find('"')?;
    let name = &rest[..end];
    (!name.contains('\\')).then(|| name.to_string())
}
