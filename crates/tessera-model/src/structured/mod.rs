//! Structured output over llguidance: a model's vocabulary as a token trie
//! (built once per loaded model), grammars compiled from JSON schemas, regular
//! expressions, Lark grammars and choice lists, and the engine's
//! [`TokenConstraint`] implemented by llguidance's `Matcher`.

mod vocab;

use std::sync::{Arc, Mutex};

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};
use tessera_engine::{Constraint, ConstraintFactory, TokenConstraint};

use crate::tokenizer::Tokenizer;

pub use vocab::VocabError;

/// What a request constrains its output to.
#[derive(Debug, Clone, PartialEq)]
pub enum Grammar {
    /// A JSON value matching this JSON schema.
    JsonSchema(Value),
    /// Any JSON object (`response_format: json_object`).
    JsonObject,
    /// Text matching a regular expression (Rust `regex` syntax), whole.
    Regex(String),
    /// Text matching a grammar in llguidance's Lark dialect (which can embed
    /// JSON schemas with `%json { ... }`).
    Lark(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
}

/// Grammar compilation for one model's vocabulary. Build it once per loaded
/// model: the token trie takes a while for large vocabularies.
pub struct GrammarCompiler {
    factory: Arc<ParserFactory>,
}

impl std::fmt::Debug for GrammarCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarCompiler").finish_non_exhaustive()
    }
}

impl GrammarCompiler {
    /// The compiler for `tokenizer`'s vocabulary, `vocab_size` wide (the
    /// model's logits may be wider than the tokenizer's vocabulary).
    pub fn new(tokenizer: Arc<Tokenizer>, vocab_size: usize) -> Result<Self, VocabError> {
        let env = vocab::tok_env(tokenizer, vocab_size)?;
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| VocabError(format!("grammar engine: {e}")))?;
        factory.quiet();
        Ok(Self {
            factory: Arc::new(factory),
        })
    }

    /// Compiles `grammar`; the error says what is wrong with it (an invalid
    /// or unsupported schema keyword, a bad regex, a grammar syntax error).
    pub fn compile(&self, grammar: &Grammar) -> Result<Constraint, String> {
        let (top, kind) = match grammar {
            Grammar::JsonSchema(schema) => (
                TopLevelGrammar::from_json_schema(with_layout(schema)?),
                "json_schema",
            ),
            Grammar::JsonObject => (
                TopLevelGrammar::from_json_schema(with_layout(&json!({"type": "object"}))?),
                "json_object",
            ),
            Grammar::Regex(rx) => (TopLevelGrammar::from_regex(rx), "regex"),
            Grammar::Lark(lark) => (TopLevelGrammar::from_lark(lark.clone()), "grammar"),
            Grammar::Choice(choices) => {
                (TopLevelGrammar::from_lark(choice_lark(choices)?), "choice")
            }
        };
        let parser = self.factory.create_parser(top).map_err(|e| e.to_string())?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(e);
        }
        Ok(Constraint::new(Compiled {
            template: Mutex::new(matcher),
            kind,
        }))
    }
}

/// JSON output laid out compactly with one space after `,` and `:` (as
/// `json.dumps` writes it), unless the schema sets its own `x-guidance`
/// options. Free whitespace would let a small model pad forever.
fn with_layout(schema: &Value) -> Result<Value, String> {
    let Value::Object(map) = schema else {
        return match schema {
            Value::Bool(_) => Ok(schema.clone()),
            _ => Err("a JSON schema must be an object or a boolean".into()),
        };
    };
    let mut map = map.clone();
    map.entry("x-guidance").or_insert_with(
        || json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
    );
    Ok(Value::Object(map))
}

/// A Lark grammar matching exactly one of `choices`.
fn choice_lark(choices: &[String]) -> Result<String, String> {
    if choices.is_empty() {
        return Err("the list of choices is empty".into());
    }
    // Lark string literals take JSON's escapes.
    let alts: Vec<String> = choices
        .iter()
        .map(|c| serde_json::to_string(c).unwrap_or_default())
        .collect();
    Ok(format!("start: {}", alts.join(" | ")))
}

/// A compiled grammar: a matcher at its start, cloned for each sequence.
struct Compiled {
    // A Mutex makes the matcher (Send, not Sync) shareable between requests.
    template: Mutex<Matcher>,
    kind: &'static str,
}

impl ConstraintFactory for Compiled {
    fn start(&self) -> Box<dyn TokenConstraint> {
        let matcher = match self.template.lock() {
            Ok(m) => m.deep_clone(),
            Err(poisoned) => poisoned.into_inner().deep_clone(),
        };
        Box::new(State { matcher })
    }

    fn describe(&self) -> String {
        self.kind.to_string()
    }
}

/// One sequence's walk through a grammar.
struct State {
    matcher: Matcher,
}

impl TokenConstraint for State {
    fn fill_mask(&mut self, mask: &mut Vec<u32>) -> Result<(), String> {
        let vob = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| e.to_string())?;
        mask.clear();
        mask.extend_from_slice(vob.as_slice());
        Ok(())
    }

    fn commit(&mut self, token: u32) -> Result<(), String> {
        self.matcher.consume_token(token).map_err(|e| e.to_string())
    }

    fn is_finished(&self) -> bool {
        self.matcher.is_stopped() && !self.matcher.is_error()
    }
}
