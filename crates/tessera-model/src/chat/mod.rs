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

use self::strftime::strftime_now;
use self::tojson::{json_to_value, tojson_filter, OrderedMap};
use std::sync::Arc;

use candle_core::quantized::gguf_file;
use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

mod limits;
mod strftime;
mod tojson;

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
        limits::apply(&mut env);
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
        limits::render(&template, Value::from(ctx), render_error)
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
        format!("'chat_template' lists templates {names:?} but none named \"default\""),
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

#[cfg(test)]
mod tests;
