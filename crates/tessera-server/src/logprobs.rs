//! The engine's token logprobs in OpenAI's two formats: chat's list of
//! `{token, logprob, bytes, top_logprobs}` and completions' parallel lists.

use serde_json::{Map, Value};
use tessera_engine::request::TokenLogprob;

use crate::openai::chat::{ChatLogprobs, ChatTokenLogprob, TopLogprob};
use crate::openai::completions::CompletionLogprobs;
use crate::openai::finite_logprob;
use crate::text::TextModel;

/// Chat format.
pub fn chat(text: &dyn TextModel, logprobs: &[TokenLogprob]) -> ChatLogprobs {
    let content = logprobs
        .iter()
        .map(|lp| {
            let token = text.token_text(lp.token);
            ChatTokenLogprob {
                bytes: token.as_bytes().to_vec(),
                token,
                logprob: finite_logprob(lp.logprob),
                top_logprobs: lp
                    .top
                    .iter()
                    .map(|&(id, logprob)| {
                        let token = text.token_text(id);
                        TopLogprob {
                            bytes: token.as_bytes().to_vec(),
                            token,
                            logprob: finite_logprob(logprob),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    ChatLogprobs {
        content,
        refusal: None,
    }
}

/// Completions format; `offset` is the number of characters of the choice's
/// text before these tokens, advanced past them.
pub fn completion(
    text: &dyn TextModel,
    logprobs: &[TokenLogprob],
    offset: &mut usize,
) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    for lp in logprobs {
        let token = text.token_text(lp.token);
        out.text_offset.push(*offset);
        *offset += token.chars().count();
        let mut top = Map::new();
        for &(id, logprob) in &lp.top {
            top.insert(text.token_text(id), json_f32(finite_logprob(logprob)));
        }
        out.top_logprobs.push(top);
        out.token_logprobs.push(finite_logprob(lp.logprob));
        out.tokens.push(token);
    }
    out
}

/// An f32 as a JSON number with the same digits serde writes for an f32
/// field (`-1.2047801`, not the widened `-1.204780101776123`), so a token's
/// logprob in `top_logprobs` equals the one in `token_logprobs`.
fn json_f32(x: f32) -> Value {
    x.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::json_f32;

    #[test]
    fn f32_logprobs_keep_their_short_digits() {
        let x = -1.204_780_1_f32;
        assert_eq!(
            json_f32(x).to_string(),
            serde_json::to_string(&x).expect("f32")
        );
    }
}
