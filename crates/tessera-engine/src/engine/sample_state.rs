//! The output side of one sample: its sampler, and the text it has streamed.

use std::sync::Arc;

use crate::constraint::TokenConstraint;
use crate::detokenize::{IncrementalDetokenizer, TokenDecoder};
use crate::request::{FinishReason, RequestId, StopReason};
use crate::sampling::{Sampler, SamplingParams};
use crate::stop::StopStrings;

/// Sampling and text state of one sequence.
pub(super) struct SampleState {
    pub request: RequestId,
    pub index: usize,
    pub params: Arc<SamplingParams>,
    pub sampler: Sampler,
    detok: IncrementalDetokenizer,
    stops: StopStrings,
    /// Generated text so far (cut at a stop string once one is found).
    text: String,
    /// Bytes of `text` already sent.
    emitted: usize,
    /// Bytes of `text` already searched for stop strings.
    checked: usize,
    /// The structured-output state, when the request has a constraint.
    pub constraint: Option<Box<dyn TokenConstraint>>,
    /// The constraint's mask for the next token, once computed.
    pub mask: Vec<u32>,
    /// Whether `mask` (or `mask_error`) is for the next token.
    pub mask_ready: bool,
    /// Why the constraint could not give a mask.
    pub mask_error: Option<String>,
}

/// What a new token did to a sample.
pub(super) struct TokenEffect {
    /// Text to send now.
    pub text: String,
    pub finish: Option<(FinishReason, Option<StopReason>)>,
}

impl SampleState {
    pub fn new(
        request: RequestId,
        index: usize,
        params: Arc<SamplingParams>,
        prompt: &[u32],
    ) -> Self {
        Self {
            request,
            index,
            sampler: Sampler::new(params.clone(), index),
            detok: IncrementalDetokenizer::new(prompt, params.skip_special_tokens),
            stops: StopStrings::new(&params.stop),
            constraint: params.constraint.as_ref().map(|c| c.start()),
            mask: Vec::new(),
            mask_ready: false,
            mask_error: None,
            params,
            text: String::new(),
            emitted: 0,
            checked: 0,
        }
    }

    /// Takes in the sampled `token`, the `num_output` tokens generated so far
    /// (this one included), and whether the sequence hit its length limit.
    pub fn on_token(
        &mut self,
        decoder: &impl TokenDecoder,
        token: u32,
        num_output: usize,
        at_length_limit: bool,
        eos_token_ids: &[u32],
    ) -> Result<TokenEffect, String> {
        let p = &self.params;
        let past_min = num_output > p.min_tokens;
        let mut finish = None;
        let is_eos = !p.ignore_eos && eos_token_ids.contains(&token);
        if past_min && (is_eos || p.stop_token_ids.contains(&token)) {
            finish = Some((FinishReason::Stop, Some(StopReason::Token(token))));
        } else {
            let delta = self.detok.push(decoder, token)?;
            self.text.push_str(&delta);
            let complete = self.constraint.as_ref().is_some_and(|c| c.is_finished());
            let at_end = complete || at_length_limit || num_output >= p.max_tokens;
            if at_end {
                let rest = self.detok.flush(decoder)?;
                self.text.push_str(&rest);
            }
            if let Some(stop) = self.find_stop(num_output) {
                finish = Some(stop);
            } else if complete {
                finish = Some((FinishReason::Stop, None));
            } else if at_end {
                finish = Some((FinishReason::Length, None));
            }
        }
        let upto = if finish.is_some() {
            self.text.len()
        } else {
            self.text.len() - self.stops.held_back(&self.text)
        };
        let text = self.text[self.emitted..upto.max(self.emitted)].to_string();
        self.emitted = upto.max(self.emitted);
        Ok(TokenEffect { text, finish })
    }

    /// Computes the constraint's mask for the next token (a no-op without a
    /// constraint or when it is already computed); an error is kept for the
    /// sampling step to report.
    pub fn prepare_mask(&mut self) {
        if self.mask_ready {
            return;
        }
        if let Some(c) = self.constraint.as_mut() {
            self.mask_error = c.fill_mask(&mut self.mask).err();
        }
        self.mask_ready = true;
    }

    /// Looks for a stop string in the text not yet searched; on a match, cuts the
    /// text where it starts.
    fn find_stop(&mut self, num_output: usize) -> Option<(FinishReason, Option<StopReason>)> {
        // Before min_tokens, stop strings do not count (as in vLLM).
        if self.stops.is_empty() || num_output < self.params.min_tokens {
            self.checked = self.text.len();
            return None;
        }
        let found = self
            .stops
            .find(&self.text, self.checked)
            .map(|(at, s)| (at, s.to_string()));
        self.checked = self.text.len();
        let (at, stop) = found?;
        // Text held back never includes the start of a stop string, so `at` is
        // not before what was sent.
        self.text.truncate(at.max(self.emitted));
        Some((FinishReason::Stop, Some(StopReason::String(stop))))
    }
}
