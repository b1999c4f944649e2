//! What the server needs from a model's text side: tokenizing, detokenizing
//! and chat templates. The binary implements it over tessera-model's tokenizer,
//! so this crate never depends on the model crate (and its tests can fake it).

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
}
