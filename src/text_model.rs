//! The server's view of a model's text side ([`TextModel`]) over
//! tessera-model's tokenizer and chat template.

use std::sync::{Arc, OnceLock};

use tessera_engine::Constraint;
use tessera_model::chat::{self, ChatTemplate};
use tessera_model::structured::{Grammar, GrammarCompiler, VocabError};
use tessera_model::tokenizer::Tokenizer;
use tessera_server::{GrammarSpec, TextModel};

/// A tokenizer and, if the model has one, its chat template.
pub struct ModelText {
    tokenizer: Arc<Tokenizer>,
    template: Option<ChatTemplate>,
    /// Built on the first structured-output request, then kept for the
    /// model's life (the token trie is the costly part).
    grammars: OnceLock<Result<GrammarCompiler, VocabError>>,
}

impl ModelText {
    /// Wraps a loaded model's tokenizer and template.
    pub fn new(tokenizer: Arc<Tokenizer>, template: Option<ChatTemplate>) -> Self {
        Self {
            tokenizer,
            template,
            grammars: OnceLock::new(),
        }
    }
}

impl TextModel for ModelText {
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, String> {
        self.tokenizer
            .encode(text, add_special_tokens)
            .map_err(|e| e.to_string())
    }

    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, String> {
        self.tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(|e| e.to_string())
    }

    fn render_chat(
        &self,
        messages: &[serde_json::Value],
        add_generation_prompt: bool,
    ) -> Result<String, String> {
        let template = chat::require(self.template.as_ref()).map_err(|e| e.to_string())?;
        template
            .render_json(messages, add_generation_prompt, &serde_json::Value::Null)
            .map_err(|e| e.to_string())
    }

    fn compile_grammar(&self, grammar: &GrammarSpec) -> Result<Constraint, String> {
        let compiler = self
            .grammars
            .get_or_init(|| {
                let width = self.tokenizer.vocab_size();
                GrammarCompiler::new(self.tokenizer.clone(), width)
            })
            .as_ref()
            .map_err(|e| e.to_string())?;
        let grammar = match grammar {
            GrammarSpec::JsonSchema(s) => Grammar::JsonSchema(s.clone()),
            GrammarSpec::JsonObject => Grammar::JsonObject,
            GrammarSpec::Regex(r) => Grammar::Regex(r.clone()),
            GrammarSpec::Lark(l) => Grammar::Lark(l.clone()),
            GrammarSpec::Choice(c) => Grammar::Choice(c.clone()),
        };
        compiler.compile(&grammar)
    }

    fn chat_template(&self) -> Option<&str> {
        self.template.as_ref().map(ChatTemplate::source)
    }

    fn special_token_id(&self, text: &str) -> Option<u32> {
        let id = self.tokenizer.token_to_id(text)?;
        // A special token vanishes when special tokens are skipped.
        let skipped = self.tokenizer.decode(&[id], true).ok()?;
        skipped.is_empty().then_some(id)
    }

    fn render_chat_with_tools(
        &self,
        messages: &[serde_json::Value],
        add_generation_prompt: bool,
        tools: &[serde_json::Value],
    ) -> Result<String, String> {
        let template = chat::require(self.template.as_ref()).map_err(|e| e.to_string())?;
        let extra = serde_json::json!({ "tools": tools });
        template
            .render_json(messages, add_generation_prompt, &extra)
            .map_err(|e| e.to_string())
    }
}
