//! Chat templates: a model's own Jinja template, rendered the way Hugging Face
//! transformers' `apply_chat_template` renders it.
//!
//! The prompt a chat model sees must be byte-for-byte the one it was trained on, so the
//! environment mirrors transformers' (`ImmutableSandboxedEnvironment(trim_blocks=True,
//! lstrip_blocks=True)` plus `raise_exception`, `strftime_now` and its own `tojson`) rather
//! than minijinja's defaults wherever the two differ:
//!
//! - Python string/dict/list methods (`.strip()`, `.items()`, ...) come from
//!   `minijinja_contrib::pycompat`;
//! - `tojson` is transformers' `json.dumps(x, ensure_ascii=False, indent=None,
//!   separators=None, sort_keys=False)`, not minijinja's HTML-safe one (which escapes
//!   `<`, `>`, `&` and `'` and would change tool definitions);
//! - objects from JSON keep their key order, as Python dicts do;
//! - `bos_token`/`eos_token` are left undefined when the model has none (transformers
//!   omits them), since a `None` would print as `None`;
//! - `tools` and `documents` are `None` unless given;
//! - the `{% generation %}` block transformers adds for assistant masks renders its body.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file;
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Enumerator, Kwargs, Object, ObjectExt, Rest, ValueKind, ValueOrKwargs};
use minijinja::{Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// Name the template is registered under; it shows up in render errors ("in chat_template:12").
const TEMPLATE_NAME: &str = "chat_template";

/// GGUF metadata key holding the chat template.
const GGUF_TEMPLATE_KEY: &str = "tokenizer.chat_template";

/// One message of a conversation.
///
/// Content is plain text: richer content (a list of parts) is flattened by the HTTP layer
/// before it gets here. Messages with other fields (tool calls) go through
/// [`ChatTemplate::render_json`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, ... (the template decides what it accepts).
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A compiled chat template together with the special tokens it may refer to.
///
/// Cheap to clone (the compiled template is shared) and safe to share between threads.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Arc<Environment<'static>>,
    source: Arc<str>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`. A template that does not parse is an error here, not at the
    /// first request.
    pub fn new(
        source: impl Into<String>,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<Self> {
        let source: String = source.into();
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            // Jinja2's default, which transformers keeps: one trailing newline is dropped.
            .keep_trailing_newline(false)
            .build()
            .map_err(|e| ModelError::Template(format!("cannot configure Jinja syntax: {e}")))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson_filter);
        let compiled = rewrite_generation_tags(&source).into_owned();
        env.add_template_owned(TEMPLATE_NAME, compiled)
            .map_err(|e| ModelError::Template(format!("invalid chat template: {e}")))?;
        Ok(Self {
            env: Arc::new(env),
            source: source.into(),
            bos_token,
            eos_token,
        })
    }

    /// The template stored in GGUF metadata (`tokenizer.chat_template`), or `None` when the
    /// file has none. `bos_token`/`eos_token` are the token strings (see
    /// [`gguf_special_tokens`]).
    pub fn from_gguf(
        metadata: &HashMap<String, gguf_file::Value>,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<Option<Self>> {
        match metadata.get(GGUF_TEMPLATE_KEY) {
            None => Ok(None),
            Some(gguf_file::Value::String(source)) => {
                Self::new(source.clone(), bos_token, eos_token).map(Some)
            }
            Some(other) => Err(ModelError::Template(format!(
                "GGUF metadata '{GGUF_TEMPLATE_KEY}' is a {:?}, not a string",
                other.value_type()
            ))),
        }
    }

    /// The template of a Hugging Face model directory, or `None` when it has none.
    ///
    /// Looks where transformers looks: `chat_template.jinja` wins; otherwise
    /// `tokenizer_config.json`'s `chat_template`, either a string or a list of
    /// `{name, template}` from which the one named `default` is used. The `bos_token` and
    /// `eos_token` strings come from `tokenizer_config.json` (a string or an added-token
    /// object with `content`).
    pub fn from_hf_dir(dir: &Path) -> Result<Option<Self>> {
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() {
            let text = std::fs::read_to_string(&config_path)
                .map_err(|e| ModelError::io(&config_path, e))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| ModelError::format(&config_path, format!("invalid JSON: {e}")))?;
            if !value.is_object() {
                return Err(ModelError::format(&config_path, "expected a JSON object"));
            }
            Some(value)
        } else {
            None
        };
        let token = |name: &str| -> Result<Option<String>> {
            match config.as_ref().and_then(|c| c.get(name)) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(serde_json::Value::Object(o)) => match o.get("content") {
                    Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                    _ => Err(ModelError::format(
                        &config_path,
                        format!("'{name}' is an object without a string 'content'"),
                    )),
                },
                Some(_) => Err(ModelError::format(
                    &config_path,
                    format!("'{name}' is neither a string nor an object with 'content'"),
                )),
            }
        };
        let bos_token = token("bos_token")?;
        let eos_token = token("eos_token")?;

        let jinja_path = dir.join("chat_template.jinja");
        if jinja_path.is_file() {
            let source =
                std::fs::read_to_string(&jinja_path).map_err(|e| ModelError::io(&jinja_path, e))?;
            return Self::new(source, bos_token, eos_token)
                .map(Some)
                .map_err(|e| ModelError::format(&jinja_path, template_error_text(e)));
        }

        let source = match config.as_ref().and_then(|c| c.get("chat_template")) {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(list)) => default_named_template(list, &config_path)?,
            Some(_) => {
                return Err(ModelError::format(
                    &config_path,
                    "'chat_template' is neither a string nor a list of {name, template}",
                ))
            }
        };
        Self::new(source, bos_token, eos_token)
            .map(Some)
            .map_err(|e| ModelError::format(&config_path, template_error_text(e)))
    }

    /// The template text as the model shipped it.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The `bos_token` string the template sees, if any.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    /// The `eos_token` string the template sees, if any.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// Renders a conversation. With `add_generation_prompt` the prompt ends where the
    /// assistant's reply should begin.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_with(messages, add_generation_prompt, &serde_json::Value::Null)
    }

    /// Like [`render`](Self::render), with extra template variables: `extra` is a JSON
    /// object (or null) whose entries become variables, e.g. `tools` (a list of tool
    /// definitions), `documents`, `enable_thinking`, or a `bos_token` override.
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra: &serde_json::Value,
    ) -> Result<String> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| {
                OrderedMap::value(vec![
                    (Value::from("role"), Value::from(m.role.as_str())),
                    (Value::from("content"), Value::from(m.content.as_str())),
                ])
            })
            .collect();
        self.render_values(messages, add_generation_prompt, extra)
    }

    /// Renders messages given as JSON objects, for messages that carry more than role and
    /// text (`tool_calls`, `tool_call_id`, `name`, content parts). Each message is passed to
    /// the template as is; `extra` is as in [`render_with`](Self::render_with).
    pub fn render_json(
        &self,
        messages: &[serde_json::Value],
        add_generation_prompt: bool,
        extra: &serde_json::Value,
    ) -> Result<String> {
        let messages = messages.iter().map(json_to_value).collect();
        self.render_values(messages, add_generation_prompt, extra)
    }

    fn render_values(
        &self,
        messages: Vec<Value>,
        add_generation_prompt: bool,
        extra: &serde_json::Value,
    ) -> Result<String> {
        let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
        // transformers passes tools and documents explicitly, as None when absent, so
        // `tools is defined` holds and `tools is none` decides.
        ctx.insert("tools".into(), Value::from(()));
        ctx.insert("documents".into(), Value::from(()));
        if let Some(bos) = &self.bos_token {
            ctx.insert("bos_token".into(), Value::from(bos.as_str()));
        }
        if let Some(eos) = &self.eos_token {
            ctx.insert("eos_token".into(), Value::from(eos.as_str()));
        }
        match extra {
            serde_json::Value::Null => {}
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    ctx.insert(key.clone(), json_to_value(value));
                }
            }
            _ => {
                return Err(ModelError::Template(
                    "extra template context must be a JSON object".into(),
                ))
            }
        }
        ctx.insert("messages".into(), Value::from(messages));
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        );

        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ModelError::Template(e.to_string()))?;
        template.render(Value::from(ctx)).map_err(render_error)
    }
}

/// The template to use for a chat request, or an error saying clearly why there is none.
pub fn require(template: Option<&ChatTemplate>) -> Result<&ChatTemplate> {
    template.ok_or_else(|| {
        ModelError::Template(
            "this model has no chat template (none in its GGUF metadata, chat_template.jinja \
             or tokenizer_config.json), so chat messages cannot be turned into a prompt; \
             plain completions with a raw prompt still work"
                .into(),
        )
    })
}

/// The BOS and EOS token strings of a GGUF file (`tokenizer.ggml.bos_token_id` /
/// `eos_token_id` looked up in `tokenizer.ggml.tokens`), for [`ChatTemplate::from_gguf`].
pub fn gguf_special_tokens(
    metadata: &HashMap<String, gguf_file::Value>,
) -> (Option<String>, Option<String>) {
    let token = |key: &str| -> Option<String> {
        let id = match metadata.get(key)? {
            gguf_file::Value::U8(v) => u64::from(*v),
            gguf_file::Value::U16(v) => u64::from(*v),
            gguf_file::Value::U32(v) => u64::from(*v),
            gguf_file::Value::U64(v) => *v,
            gguf_file::Value::I32(v) => u64::try_from(*v).ok()?,
            gguf_file::Value::I64(v) => u64::try_from(*v).ok()?,
            _ => return None,
        };
        let tokens = match metadata.get("tokenizer.ggml.tokens")? {
            gguf_file::Value::Array(tokens) => tokens,
            _ => return None,
        };
        match tokens.get(usize::try_from(id).ok()?)? {
            gguf_file::Value::String(s) => Some(s.clone()),
            _ => None,
        }
    };
    (
        token("tokenizer.ggml.bos_token_id"),
        token("tokenizer.ggml.eos_token_id"),
    )
}

/// Picks the template named "default" from tokenizer_config.json's list form.
fn default_named_template(list: &[serde_json::Value], path: &Path) -> Result<String> {
    let mut names = Vec::new();
    for entry in list {
        let name = entry.get("name").and_then(|n| n.as_str());
        let template = entry.get("template").and_then(|t| t.as_str());
        match (name, template) {
            (Some("default"), Some(template)) => return Ok(template.to_string()),
            (Some(name), Some(_)) => names.push(name.to_string()),
            _ => {
                return Err(ModelError::format(
                    path,
                    "'chat_template' list entries must be {\"name\": string, \"template\": string}",
                ))
            }
        }
    }
    // transformers refuses too: without a default it cannot know which one is meant.
    Err(ModelError::format(
        path,
        format!(
            "'chat_template' lists templates {names:?} but none named \"default\""
        ),
    ))
}

/// The message of a template error without the "chat template: " prefix, for errors that
/// get re-wrapped with the file they came from.
fn template_error_text(err: ModelError) -> String {
    match err {
        ModelError::Template(msg) => msg,
        other => other.to_string(),
    }
}

/// The message a template passed to `raise_exception`, carried as the source of the
/// minijinja error so it can be told apart from engine errors.
#[derive(Debug)]
struct RaisedException(String);

impl fmt::Display for RaisedException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

/// `raise_exception(msg)`: templates use it to reject conversations they cannot format.
fn raise_exception(message: String) -> std::result::Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(RaisedException(message)))
}

/// Turns a render error into the crate's error: a template's own `raise_exception` message
/// verbatim (it is meant for the user), anything else with its location.
fn render_error(err: Error) -> ModelError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(raised) = e.downcast_ref::<RaisedException>() {
            return ModelError::Template(raised.0.clone());
        }
        source = e.source();
    }
    let mut msg = format!("rendering failed: {err}");
    let mut source = std::error::Error::source(&err);
    while let Some(e) = source {
        msg.push_str(": ");
        msg.push_str(&e.to_string());
        source = e.source();
    }
    ModelError::Template(msg)
}

/// `strftime_now(format)`: the current time formatted like Python's `strftime`.
///
/// transformers uses local time; a server has no meaningful local zone (and containers
/// run in UTC), so this is UTC.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    strftime_utc(&format, secs)
}

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01, as (year, month 1-12, day 1-31).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Python/glibc `strftime` for a UTC timestamp. Supports the common directives and glibc's
/// `-` flag (no padding, e.g. `%-d`); unknown directives are copied as they are, as glibc
/// does.
fn strftime_utc(format: &str, secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (sod / 3600, sod % 3600 / 60, sod % 60);
    let weekday = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let yday = days - days_from_civil(year, 1, 1) + 1;
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };
    let month_name = MONTHS[(month - 1).clamp(0, 11) as usize];
    let weekday_name = WEEKDAYS[weekday];

    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let unpadded = chars.peek() == Some(&'-');
        if unpadded {
            chars.next();
        }
        let num = |n: i64, width: usize| {
            if unpadded {
                n.to_string()
            } else {
                format!("{n:0width$}")
            }
        };
        let Some(d) = chars.next() else {
            out.push('%');
            if unpadded {
                out.push('-');
            }
            break;
        };
        let piece = match d {
            'Y' => year.to_string(),
            'y' => num(year.rem_euclid(100), 2),
            'C' => num(year.div_euclid(100), 2),
            'm' => num(month, 2),
            'd' => num(day, 2),
            'e' => {
                if unpadded {
                    day.to_string()
                } else {
                    format!("{day:2}")
                }
            }
            'j' => num(yday, 3),
            'H' => num(hour, 2),
            'I' => num(hour12, 2),
            'M' => num(minute, 2),
            'S' => num(second, 2),
            'p' => (if hour < 12 { "AM" } else { "PM" }).to_string(),
            'a' => weekday_name[..3].to_string(),
            'A' => weekday_name.to_string(),
            'b' | 'h' => month_name[..3].to_string(),
            'B' => month_name.to_string(),
            'u' => (if weekday == 0 { 7 } else { weekday }).to_string(),
            'w' => weekday.to_string(),
            'F' => format!("{year}-{month:02}-{day:02}"),
            'D' | 'x' => format!("{month:02}/{day:02}/{:02}", year.rem_euclid(100)),
            'T' | 'X' => format!("{hour:02}:{minute:02}:{second:02}"),
            'R' => format!("{hour:02}:{minute:02}"),
            'c' => format!(
                "{} {} {day:2} {hour:02}:{minute:02}:{second:02} {year}",
                &weekday_name[..3],
                &month_name[..3]
            ),
            'Z' => "UTC".to_string(),
            'z' => "+0000".to_string(),
            's' => secs.to_string(),
            'n' => "\n".to_string(),
            't' => "\t".to_string(),
            '%' => "%".to_string(),
            other => {
                let mut s = String::from("%");
                if unpadded {
                    s.push('-');
                }
                s.push(other);
                s
            }
        };
        out.push_str(&piece);
    }
    out
}

/// Rewrites transformers' `{% generation %}` / `{% endgeneration %}` tags (used only to
/// compute assistant-token masks) into `{% if true %}` / `{% endif %}`, which render the
/// body the same way and keep the tags' whitespace control.
fn rewrite_generation_tags(source: &str) -> Cow<'_, str> {
    if !source.contains("generation") {
        return Cow::Borrowed(source);
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    let mut changed = false;
    while let Some(start) = rest.find("{%") {
        let bytes = rest.as_bytes();
        let mut i = start + 2;
        if matches!(bytes.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        let word_start = i;
        while bytes
            .get(i)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
        {
            i += 1;
        }
        let replacement = match &rest[word_start..i] {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        if let Some(replacement) = replacement {
            let mut j = i;
            while bytes.get(j).is_some_and(u8::is_ascii_whitespace) {
                j += 1;
            }
            if matches!(bytes.get(j), Some(b'-' | b'+')) {
                j += 1;
            }
            if rest[j..].starts_with("%}") {
                out.push_str(&rest[..word_start]);
                out.push_str(replacement);
                rest = &rest[i..];
                changed = true;
                continue;
            }
        }
        out.push_str(&rest[..start + 2]);
        rest = &rest[start + 2..];
    }
    if !changed {
        return Cow::Borrowed(source);
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// A map that keeps insertion order, as Python dicts (and so templates' `tojson` and
/// `.items()`) do; minijinja's own maps sort their keys.
#[derive(Debug)]
struct OrderedMap {
    entries: Vec<(Value, Value)>,
    index: BTreeMap<Value, usize>,
}

impl OrderedMap {
    /// A template value holding `entries`; a repeated key keeps its first position and
    /// its last value, as in a Python dict literal.
    fn value(entries: Vec<(Value, Value)>) -> Value {
        let mut map = OrderedMap {
            entries: Vec::with_capacity(entries.len()),
            index: BTreeMap::new(),
        };
        for (key, value) in entries {
            match map.index.get(&key) {
                Some(&pos) => map.entries[pos].1 = value,
                None => {
                    map.index.insert(key.clone(), map.entries.len());
                    map.entries.push((key, value));
                }
            }
        }
        Value::from_object(map)
    }
}

impl Object for OrderedMap {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let pos = *self.index.get(key)?;
        self.entries.get(pos).map(|(_, v)| v.clone())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.mapped_key_value_enumerator(|this| {
            Box::new(this.entries.iter().map(|(k, v)| (k.clone(), v.clone())))
        })
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// A JSON value as a template value, objects keeping their key order.
fn json_to_value(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => {
            Value::from(items.iter().map(json_to_value).collect::<Vec<_>>())
        }
        serde_json::Value::Object(map) => OrderedMap::value(
            map.iter()
                .map(|(k, v)| (Value::from(k.as_str()), json_to_value(v)))
                .collect(),
        ),
    }
}

/// How transformers' `tojson` (Python's `json.dumps`) lays out its output.
struct JsonStyle {
    ensure_ascii: bool,
    indent: Option<String>,
    item_separator: String,
    key_separator: String,
    sort_keys: bool,
}

/// `tojson(ensure_ascii=False, indent=None, separators=None, sort_keys=False)`, the filter
/// transformers installs, with `json.dumps` output.
fn tojson_filter(value: &Value, args: Rest<ValueOrKwargs>) -> std::result::Result<Value, Error> {
    const NAMES: [&str; 4] = ["ensure_ascii", "indent", "separators", "sort_keys"];
    let mut positional = Vec::new();
    let mut kwargs: Option<Kwargs> = None;
    for arg in args.0 {
        let arg = arg.into_value();
        if arg.is_kwargs() {
            kwargs = Some(Kwargs::try_from(arg)?);
        } else {
            positional.push(arg);
        }
    }
    if positional.len() > NAMES.len() {
        return Err(Error::new(
            ErrorKind::TooManyArguments,
            "tojson takes at most 4 arguments",
        ));
    }
    let mut params: [Option<Value>; 4] = Default::default();
    for (i, name) in NAMES.iter().enumerate() {
        let from_kw = match &kwargs {
            Some(kw) => kw.get::<Option<Value>>(name)?,
            None => None,
        };
        params[i] = positional.get(i).cloned().or(from_kw);
    }
    if let Some(kw) = &kwargs {
        kw.assert_all_used()?;
    }
    let [ensure_ascii, indent, separators, sort_keys] = params;

    let indent = match present(indent.as_ref()) {
        None => None,
        Some(v) if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or("").to_string()),
        Some(v) if v.kind() == ValueKind::Bool => Some(if v.is_true() { " " } else { "" }.into()),
        Some(v) => {
            let n = v.as_i64().ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an integer or a string",
                )
            })?;
            Some(" ".repeat(usize::try_from(n).unwrap_or(0)))
        }
    };
    let (item_separator, key_separator) = match present(separators.as_ref()) {
        Some(v) => {
            let parts: Vec<Value> = v.try_iter()?.collect();
            match parts.as_slice() {
                [item, key] if item.as_str().is_some() && key.as_str().is_some() => (
                    item.as_str().unwrap_or_default().to_string(),
                    key.as_str().unwrap_or_default().to_string(),
                ),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair of strings",
                    ))
                }
            }
        }
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let style = JsonStyle {
        ensure_ascii: present(ensure_ascii.as_ref()).is_some_and(Value::is_true),
        indent,
        item_separator,
        key_separator,
        sort_keys: present(sort_keys.as_ref()).is_some_and(Value::is_true),
    };
    let mut out = String::new();
    write_json(&mut out, value, &style, 0)?;
    Ok(Value::from(out))
}

fn not_serializable(what: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("tojson: object of type {what} is not JSON serializable"),
    )
}

fn write_newline_indent(out: &mut String, style: &JsonStyle, level: usize) {
    if let Some(indent) = &style.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(indent);
        }
    }
}

fn write_json(
    out: &mut String,
    value: &Value,
    style: &JsonStyle,
    level: usize,
) -> std::result::Result<(), Error> {
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&json_number(value)?),
        ValueKind::String => write_json_str(out, value.as_str().unwrap_or(""), style.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_separator);
                }
                write_newline_indent(out, style, level + 1);
                write_json(out, item, style, level + 1)?;
            }
            write_newline_indent(out, style, level);
            out.push(']');
        }
        ValueKind::Map => {
            let pairs: Vec<(Value, Value)> = match value.as_object() {
                Some(obj) => obj.try_iter_pairs().into_iter().flatten().collect(),
                None => Vec::new(),
            };
            let mut entries = Vec::with_capacity(pairs.len());
            for (key, item) in pairs {
                entries.push((json_key(&key)?, item));
            }
            if style.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            if entries.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_separator);
                }
                write_newline_indent(out, style, level + 1);
                write_json_str(out, key, style.ensure_ascii);
                out.push_str(&style.key_separator);
                write_json(out, item, style, level + 1)?;
            }
            write_newline_indent(out, style, level);
            out.push('}');
        }
        ValueKind::Undefined => return Err(not_serializable("Undefined")),
        other => return Err(not_serializable(other)),
    }
    Ok(())
}

/// A dict key as `json.dumps` writes it: strings as they are, numbers, booleans and None
/// converted to their JSON spelling.
fn json_key(key: &Value) -> std::result::Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or("").to_string()),
        ValueKind::Number => json_number(key),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.into()),
        ValueKind::None => Ok("null".into()),
        _ => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "tojson: keys must be str, int, float, bool or None, not {}",
                key.kind()
            ),
        )),
    }
}

fn json_number(value: &Value) -> std::result::Result<String, Error> {
    if value.is_integer() {
        return Ok(value.to_string());
    }
    let f = f64::try_from(value.clone())?;
    Ok(py_float_repr(f))
}

/// Python's `repr(float)`, which `json.dumps` uses: shortest round-trip digits, positional
/// between 1e-4 and 1e16, otherwise `1e-05` style; `NaN`/`Infinity` as json.dumps spells
/// them.
fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // `{:e}` gives the shortest round-trip digits as d.ddde±x.
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::new();
    if x.is_sign_negative() {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.unsigned_abs()));
    }
    out
}

/// A JSON string literal as `json.dumps` writes it.
fn write_json_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ensure_ascii && !(' '..='~').contains(&c) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        let cases = [
            (1.0, "1.0"),
            (0.5, "0.5"),
            (-2.25, "-2.25"),
            (0.1, "0.1"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.25e100, "1.25e+100"),
            (123456.789, "123456.789"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (f64::INFINITY, "Infinity"),
        ];
        for (x, want) in cases {
            assert_eq!(py_float_repr(x), want, "{x}");
        }
    }

    #[test]
    fn strftime_formats_like_glibc() {
        // 2024-07-26 13:05:09 UTC, a Friday, day 208 of a leap year.
        let t = days_from_civil(2024, 7, 26) * 86_400 + 13 * 3600 + 5 * 60 + 9;
        assert_eq!(strftime_utc("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(strftime_utc("%-d %B %Y", t), "26 July 2024");
        assert_eq!(
            strftime_utc("%A %a %j %H:%M:%S %I %p %y %m %e %%", t),
            "Friday Fri 208 13:05:09 01 PM 24 07 26 %"
        );
        assert_eq!(strftime_utc("%F %T %Q", t), "2024-07-26 13:05:09 %Q");
        let t = days_from_civil(2025, 1, 5) * 86_400;
        assert_eq!(strftime_utc("%-m/%-d %e|%I%p", t), "1/5  5|12AM");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn generation_tags_become_if_blocks() {
        let src = "{% for m in messages %}{%- generation -%}{{ m }}{% endgeneration %}{% endfor %}";
        assert_eq!(
            rewrite_generation_tags(src),
            "{% for m in messages %}{%- if true -%}{{ m }}{% endif %}{% endfor %}"
        );
        let untouched = "{{ 'generation' }}{% if generation_x %}{% endif %}";
        assert!(matches!(rewrite_generation_tags(untouched), Cow::Borrowed(_)));
    }
}

/// A keyword or positional argument that was given and is not `None`/undefined.
fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_none() && !v.is_undefined())
}
