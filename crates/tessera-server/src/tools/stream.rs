//! Tool calls read while the text streams in, for any family's [`Frame`]:
//! text outside calls goes out as content as soon as it cannot be the start
//! of a call; a call's index and name go out as soon as its name is complete,
//! then its arguments' text in pieces as it arrives, as OpenAI's
//! `delta.tool_calls` do. A whole reply is read by the same parser, so a
//! streamed reply and a whole one always give the same calls.

use super::scan::{scan_block, BlockEnd, Frame};

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

/// A call read back from a whole reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedCall {
    pub name: String,
    /// The arguments as JSON text (OpenAI sends them as a string).
    pub arguments: String,
}

/// One choice's parser state.
#[derive(Debug)]
pub struct ToolStream {
    frame: Frame,
    /// Text not yet handed out.
    pending: String,
    /// Inside a block of calls.
    block: Option<Block>,
    /// Calls started so far.
    calls: usize,
    /// Whether content other than whitespace went out (a Llama reply that
    /// starts with text is not a call).
    said_something: bool,
    /// Right after a block: whitespace (between Hermes calls) is not content.
    after_block: bool,
    /// Reading a whole reply: a block that turns out malformed is all text,
    /// even past a complete name (a stream cannot take a sent name back).
    whole: bool,
}

/// A block of calls being read.
#[derive(Debug)]
struct Block {
    /// The text that opened it (the trigger, or nothing for a bare `{`).
    opener: String,
    /// Its text after the opener.
    body: String,
    /// Per started call: the arguments' bytes sent.
    sent: Vec<usize>,
    /// The index of its first call.
    first: usize,
}

impl ToolStream {
    /// A parser for calls framed as `frame`.
    pub fn new(frame: Frame) -> Self {
        Self {
            frame,
            pending: String::new(),
            block: None,
            calls: 0,
            said_something: false,
            after_block: false,
            whole: false,
        }
    }

    /// Number of calls started so far.
    pub fn num_calls(&self) -> usize {
        self.calls
    }

    /// Takes in `text` and returns what can be sent now.
    pub fn push(&mut self, text: &str) -> Vec<ToolEvent> {
        self.pending.push_str(text);
        let mut events = Vec::new();
        loop {
            let progressed = match self.block.take() {
                None => self.text_mode(&mut events),
                Some(block) => self.block_mode(block, &mut events),
            };
            if !progressed {
                return events;
            }
        }
    }

    /// Outside a block: hands out content, and opens a block at a trigger.
    /// Returns whether a block opened (so the loop goes on).
    fn text_mode(&mut self, events: &mut Vec<ToolEvent>) -> bool {
        if self.after_block {
            let trimmed = self.pending.trim_start();
            if trimmed.is_empty() {
                self.pending.clear();
                return false;
            }
            self.pending = trimmed.to_string();
            self.after_block = false;
        }
        if self.frame.bare_start && !self.said_something && self.calls == 0 {
            let trimmed = self.pending.trim_start();
            if trimmed.is_empty() {
                // Only whitespace yet: it may come before a call.
                return false;
            }
            if trimmed.starts_with('{') {
                let body = trimmed.to_string();
                self.pending.clear();
                self.open_block(String::new(), body);
                return true;
            }
        }
        if let Some(at) = self.pending.find(self.frame.trigger) {
            let body = self.pending.split_off(at + self.frame.trigger.len());
            self.pending.truncate(at);
            let before = std::mem::take(&mut self.pending);
            self.content(events, before);
            self.open_block(self.frame.trigger.to_string(), body);
            return true;
        }
        // Hold back what may be the beginning of the trigger.
        let keep = partial_suffix(&self.pending, self.frame.trigger);
        let rest = self.pending.split_off(self.pending.len() - keep);
        let out = std::mem::replace(&mut self.pending, rest);
        self.content(events, out);
        false
    }

    fn open_block(&mut self, opener: String, body: String) {
        self.block = Some(Block {
            opener,
            body,
            sent: Vec::new(),
            first: self.calls,
        });
    }

    /// Inside a block: sends what its calls gained. Returns whether the block
    /// ended (and the loop goes on with the text after it).
    fn block_mode(&mut self, mut block: Block, out: &mut Vec<ToolEvent>) -> bool {
        block.body.push_str(&self.pending);
        self.pending.clear();
        let scan = scan_block(&block.body, &self.frame);
        let mut events = Vec::new();
        for (i, call) in scan.calls.iter().enumerate() {
            if i == block.sent.len() {
                let Some(name) = &call.name else { break };
                events.push(ToolEvent::Start {
                    index: block.first + i,
                    name: name.clone(),
                });
                block.sent.push(0);
                self.calls += 1;
            }
            let sent = block.sent[i];
            // Arguments only grow as text arrives (a call whose arguments
            // were replaced scans as invalid), so what is new is their tail.
            if let Some(fragment) = call.arguments.get(sent..).filter(|f| !f.is_empty()) {
                events.push(ToolEvent::Arguments {
                    index: block.first + i,
                    fragment: fragment.to_string(),
                });
                block.sent[i] = call.arguments.len();
            }
        }
        if self.whole && matches!(scan.end, BlockEnd::Invalid(_)) {
            self.calls = block.first;
            block.sent.clear();
            events.clear();
        }
        out.append(&mut events);
        match scan.end {
            BlockEnd::Open => {
                self.block = Some(block);
                false
            }
            BlockEnd::Closed(used) => {
                self.pending = block.body.split_off(used);
                self.after_block = true;
                true
            }
            BlockEnd::Invalid(valid_to) => {
                if block.sent.is_empty() {
                    // Not calls after all: the opener is text, and what
                    // follows is read again (it may hold a real call).
                    self.content(out, block.opener);
                    if self.frame.bare_start {
                        self.said_something = true;
                    }
                    self.pending = block.body;
                } else {
                    self.pending = block.body.split_off(valid_to);
                }
                true
            }
        }
    }

    /// At the end of the text: anything held back goes out as content.
    pub fn finish(&mut self) -> Vec<ToolEvent> {
        let mut events = Vec::new();
        if let Some(block) = self.block.take() {
            if block.sent.is_empty() {
                let text = format!("{}{}", block.opener, block.body);
                self.content(&mut events, text);
            }
        }
        let rest = std::mem::take(&mut self.pending);
        if !(self.after_block && rest.trim().is_empty()) {
            self.content(&mut events, rest);
        }
        events
    }

    fn content(&mut self, events: &mut Vec<ToolEvent>, text: String) {
        if text.is_empty() {
            return;
        }
        if !text.trim().is_empty() {
            self.said_something = true;
        }
        events.push(ToolEvent::Content(text));
    }
}

/// Reads a whole reply into its text and its calls. Text around the calls is
/// the content (`None` when only whitespace is left); a reply without calls
/// is all content, as it was.
pub fn parse(frame: Frame, text: &str) -> (Option<String>, Vec<ParsedCall>) {
    let mut stream = ToolStream::new(frame);
    stream.whole = true;
    let mut events = stream.push(text);
    events.extend(stream.finish());
    let mut content = String::new();
    let mut calls: Vec<ParsedCall> = Vec::new();
    for e in events {
        match e {
            ToolEvent::Content(t) => content.push_str(&t),
            ToolEvent::Start { name, .. } => calls.push(ParsedCall {
                name,
                arguments: String::new(),
            }),
            ToolEvent::Arguments { index, fragment } => {
                if let Some(call) = calls.get_mut(index) {
                    call.arguments.push_str(&fragment);
                }
            }
        }
    }
    if calls.is_empty() {
        return (Some(text.to_string()), calls);
    }
    let trimmed = content.trim();
    ((!trimmed.is_empty()).then(|| trimmed.to_string()), calls)
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
