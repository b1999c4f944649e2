//! What the server needs from a model's text side: tokenizing, detokenizing
//! and chat templates. The binary implements it over tessera-model's tokenizer,
//! so this crate never depends on the model crate (and its tests can fake it).

use tessera_engine::Constraint;

/// What a request constrains its output to (see the `structured` module).
#[derive(Debug, Clone, PartialEq)]
pub enum GrammarSpec {
    /// A JSON value matching this JSON schema.
    JsonSchema(serde_json::Value),
    /// Any JSON object.
    JsonObject,
    /// Text matching this regular expression, whole.
    Regex(String),
    /// Text matching a Lark grammar (llguidance's dialect).
    Lark(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
}

/// A model's tokenizer and chat template, as the HTTP layer uses them.
///
/// Errors are messages meant for the client (they become 400 responses).
pub trait TextModel: Send + Sync {
    /// Token ids of `text`; `add_special_tokens` adds what the model puts
    /// around a sequence (its BOS, for most).
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, String>;

    /// The text of `ids`.
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, String>;

    /// How one token reads on its own, for logprobs (special tokens included).
    fn token_text(&self, id: u32) -> String {
        self.decode(&[id], false).unwrap_or_default()
    }

    /// Renders chat messages (JSON objects with `role` and string `content`)
    /// with the model's template, ending where the assistant's reply begins
    /// when `add_generation_prompt`. A model without a template is an error
    /// that says so.
    fn render_chat(
        &self,
        messages: &[serde_json::Value],
        add_generation_prompt: bool,
    ) -> Result<String, String>;

    /// Compiles `grammar` into a constraint over this model's vocabulary.
    /// The error says what is wrong with the grammar (it becomes a 400).
    fn compile_grammar(&self, grammar: &GrammarSpec) -> Result<Constraint, String> {
        let _ = grammar;
        Err("structured output is not available for this model".into())
    }

    /// Whether the chat template renders a `tools` list itself (otherwise
    /// the server describes the tools in a system message).
    fn template_handles_tools(&self) -> bool {
        false
    }

    /// [`TextModel::render_chat`] with `tools` (OpenAI's shape) passed to the
    /// template as transformers passes them.
    fn render_chat_with_tools(
        &self,
        messages: &[serde_json::Value],
        add_generation_prompt: bool,
        tools: &[serde_json::Value],
    ) -> Result<String, String> {
        let _ = tools;
        self.render_chat(messages, add_generation_prompt)
    }
}
