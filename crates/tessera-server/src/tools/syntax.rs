//! Which tool-call syntax a model speaks, told from its chat template (and
//! its name where the template does not say), and the one place the server
//! asks a syntax for its grammar, its parser and its call ids.

use super::grammar::{Mode, Trigger};
use super::scan::Frame;
use super::stream::{parse, ParsedCall, ToolStream};
use super::{hermes, llama, mistral, mistral_v11, Function};
use crate::ids::new_id;
use crate::text::TextModel;

/// A tool-call syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `<tool_call>{...}</tool_call>` (Hermes, Qwen 2.5 / 3, and what tessera
    /// teaches a model whose template has no tool syntax).
    Hermes,
    /// Llama 3.1 / 3.2: bare JSON with `parameters`, optionally after
    /// `<|python_tag|>`.
    Llama3,
    /// Mistral v0.3: `[TOOL_CALLS] [{...}, ...]`.
    Mistral,
    /// Mistral's v11+ templates (Small 3.2, Magistral, Devstral):
    /// `[TOOL_CALLS]name[ARGS]{...}` per call.
    MistralV11,
}

impl Family {
    /// The family a chat template writes calls in, if it writes any: the
    /// call's opening text in the template decides; a template that renders
    /// tools without one is told by the model's name.
    pub fn detect(template: &str, model_name: &str) -> Option<Family> {
        if mistral_v11::template_uses(template) {
            return Some(Family::MistralV11);
        }
        if template.contains(mistral::TOOL_CALLS) {
            return Some(Family::Mistral);
        }
        if template.contains(hermes::OPEN) {
            return Some(Family::Hermes);
        }
        if template.contains(llama::PYTHON_TAG)
            || (template.contains("tools") && template.contains("<|start_header_id|>"))
        {
            return Some(Family::Llama3);
        }
        if !template.contains("tools") {
            return None;
        }
        let name = model_name.to_ascii_lowercase();
        if name.contains("mistral") || name.contains("mixtral") {
            Some(Family::Mistral)
        } else if name.contains("llama-3") || name.contains("llama3") {
            Some(Family::Llama3)
        } else if name.contains("qwen") || name.contains("hermes") {
            Some(Family::Hermes)
        } else {
            None
        }
    }

    fn frame(self) -> Frame {
        match self {
            Family::Hermes => hermes::FRAME,
            Family::Llama3 => llama::FRAME,
            Family::Mistral => mistral::FRAME,
            Family::MistralV11 => mistral_v11::FRAME,
        }
    }
}

/// A request's tool syntax: the family, how its calls open in this model's
/// vocabulary, and whether the chat template renders the tools itself
/// (otherwise a system message teaches the Hermes syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syntax {
    pub family: Family,
    pub trigger: Trigger,
    /// How `[ARGS]` is written, for [`Family::MistralV11`] (`None` for the
    /// others).
    pub args: Option<Trigger>,
    pub template_renders_tools: bool,
}

impl Syntax {
    /// The syntax of `text`'s model (called `model_name`).
    pub fn of_model(text: &dyn TextModel, model_name: &str) -> Syntax {
        let detected = text
            .chat_template()
            .and_then(|t| Family::detect(t, model_name));
        let family = detected.unwrap_or(Family::Hermes);
        let opening = family.frame().trigger;
        let token_or_text = |marker: &'static str| match text.special_token_id(marker) {
            Some(id) => Trigger::Token(id),
            None => Trigger::Text(marker),
        };
        Syntax {
            family,
            trigger: token_or_text(opening),
            args: (family == Family::MistralV11).then(|| token_or_text(mistral_v11::ARGS)),
            template_renders_tools: detected.is_some(),
        }
    }

    /// The syntax tessera teaches a model without one of its own.
    pub fn fallback() -> Syntax {
        Syntax {
            family: Family::Hermes,
            trigger: Trigger::Text(hermes::OPEN),
            args: None,
            template_renders_tools: false,
        }
    }

    /// Whether the calls open with a special token, which the detokenizer
    /// must then keep in the text for the parser to see.
    pub fn needs_special_tokens(&self) -> bool {
        matches!(self.trigger, Trigger::Token(_)) || matches!(self.args, Some(Trigger::Token(_)))
    }

    /// The Lark grammar for calls to `functions`.
    pub fn grammar(&self, functions: &[&Function], mode: Mode, parallel: bool) -> String {
        match self.family {
            Family::Hermes => hermes::grammar(functions, mode, parallel, &self.trigger),
            Family::Mistral => mistral::grammar(functions, mode, parallel, &self.trigger),
            Family::MistralV11 => {
                let args = self
                    .args
                    .clone()
                    .unwrap_or(Trigger::Text(mistral_v11::ARGS));
                mistral_v11::grammar(functions, mode, parallel, &self.trigger, &args)
            }
            Family::Llama3 => {
                let tag = matches!(self.trigger, Trigger::Token(_)).then_some(&self.trigger);
                llama::grammar(functions, mode, parallel, tag)
            }
        }
    }

    /// A parser for a streamed reply.
    pub fn stream(&self) -> ToolStream {
        ToolStream::new(self.family.frame())
    }

    /// Reads a whole reply into its content and calls.
    pub fn parse(&self, text: &str) -> (Option<String>, Vec<ParsedCall>) {
        parse(self.family.frame(), text)
    }

    /// A new call id, in the form the family's template accepts.
    pub fn call_id(&self) -> String {
        match self.family {
            Family::Mistral | Family::MistralV11 => mistral::call_id(),
            _ => new_id("call_"),
        }
    }
}
