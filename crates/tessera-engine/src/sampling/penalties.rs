//! Logit processors that run before token selection: repetition, presence and
//! frequency penalties, logit bias, and min_tokens masking.
//!
//! All of them are sparse: they touch only tokens that occurred or were named,
//! never the whole vocabulary, and record every value they overwrite so the
//! caller can restore the raw row (for logprobs and the all-masked fallback).

use super::params::SamplingParams;

/// `(token, value before the write)`, in write order; restoring in reverse
/// order yields the raw row even when a token was written several times.
pub(crate) type Touched = Vec<(u32, f32)>;

#[derive(Clone, Copy, Default)]
struct Slot {
    stamp: u32,
    count: u32,
}

/// Per-token output counts over a vocabulary, reused across calls.
///
/// Slots carry a stamp instead of being cleared after each call, so a call
/// costs O(prompt + output) rather than O(vocab), and an unwinding panic can
/// never leave stale counts behind.
#[derive(Default)]
pub(crate) struct TokenCounts {
    slots: Vec<Slot>,
    stamp: u32,
}

impl TokenCounts {
    /// Starts a call over `vocab` tokens; returns the stamps meaning "counted
    /// in this call" and "already penalized in this call".
    fn begin(&mut self, vocab: usize) -> (u32, u32) {
        if self.slots.len() < vocab {
            self.slots.resize(vocab, Slot::default());
        }
        if self.stamp >= u32::MAX - 2 {
            // Wrapping would make stale slots look current: wipe once per 2^31 calls.
            self.slots.fill(Slot::default());
            self.stamp = 0;
        }
        self.stamp += 2;
        (self.stamp, self.stamp + 1)
    }
}

/// Applies the repetition penalty over prompt + output tokens, then the
/// frequency and presence penalties over output tokens (vLLM's order and
/// formulas). Token ids outside the vocabulary are ignored.
pub(crate) fn apply_penalties(
    logits: &mut [f32],
    prompt: &[u32],
    output: &[u32],
    params: &SamplingParams,
    counts: &mut TokenCounts,
    touched: &mut Touched,
) {
    let repetition_on = params.repetition_penalty != 1.0;
    let output_on = params.presence_penalty != 0.0 || params.frequency_penalty != 0.0;
    if !repetition_on && !output_on {
        return;
    }
    let vocab = logits.len();
    let (counted, done) = counts.begin(vocab);
    let slots = &mut counts.slots;
    for &t in output {
        if let Some(slot) = slots[..vocab].get_mut(t as usize) {
            if slot.stamp != counted {
                *slot = Slot {
                    stamp: counted,
                    count: 0,
                };
            }
            slot.count = slot.count.saturating_add(1);
        }
    }
    // Second pass: penalize each distinct output token once, with its count.
    for &t in output {
        if let Some(slot) = slots[..vocab].get_mut(t as usize) {
            if slot.stamp == counted {
                slot.stamp = done;
                penalize(logits, t, slot.count, params, touched);
            }
        }
    }
    if repetition_on {
        for &t in prompt {
            if let Some(slot) = slots[..vocab].get_mut(t as usize) {
                if slot.stamp != done {
                    slot.stamp = done;
                    penalize(logits, t, 0, params, touched);
                }
            }
        }
    }
}

/// Penalizes one distinct token that occurred `count` times in the output
/// (0 = prompt only).
fn penalize(logits: &mut [f32], token: u32, count: u32, p: &SamplingParams, touched: &mut Touched) {
    let i = token as usize;
    let old = logits[i];
    touched.push((token, old));
    let mut l = old;
    if p.repetition_penalty != 1.0 {
        l = if l > 0.0 {
            l / p.repetition_penalty
        } else {
            l * p.repetition_penalty
        };
    }
    if count > 0 {
        // Two subtractions, as vLLM does, so results match it bit for bit.
        l -= p.frequency_penalty * count as f32;
        l -= p.presence_penalty;
    }
    logits[i] = l;
}

/// Adds `params.logit_bias`; ids outside the vocabulary are ignored
/// (validation rejects them, but the sampler must not panic on bad input).
pub(crate) fn apply_logit_bias(logits: &mut [f32], params: &SamplingParams, touched: &mut Touched) {
    for &(token, bias) in &params.logit_bias {
        if let Some(l) = logits.get_mut(token as usize) {
            touched.push((token, *l));
            *l += bias;
        }
    }
}

/// While the output is shorter than `min_tokens`, sets the logits of
/// `stop_token_ids` and (unless `ignore_eos`, as in vLLM, where EOS then does
/// not end the sequence anyway) of `eos_token_ids` to -inf.
pub(crate) fn apply_min_tokens(
    logits: &mut [f32],
    output_len: usize,
    eos_token_ids: &[u32],
    params: &SamplingParams,
    touched: &mut Touched,
) {
    if output_len >= params.min_tokens {
        return;
    }
    let eos: &[u32] = if params.ignore_eos {
        &[]
    } else {
        eos_token_ids
    };
    for &token in params.stop_token_ids.iter().chain(eos) {
        if let Some(l) = logits.get_mut(token as usize) {
            touched.push((token, *l));
            *l = f32::NEG_INFINITY;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn penalized(logits: &[f32], prompt: &[u32], output: &[u32], p: &SamplingParams) -> Vec<f32> {
        let mut l = logits.to_vec();
        let mut touched = Vec::new();
        let mut counts = TokenCounts::default();
        apply_penalties(&mut l, prompt, output, p, &mut counts, &mut touched);
        // Restoring must give back the raw row.
        let mut restored = l.clone();
        for &(t, v) in touched.iter().rev() {
            restored[t as usize] = v;
        }
        assert_eq!(restored, logits);
        l
    }

    const LOGITS: [f32; 5] = [2.0, -1.0, 0.5, 3.0, -2.0];

    #[test]
    fn repetition_divides_positive_and_multiplies_negative() {
        let p = SamplingParams {
            repetition_penalty: 2.0,
            ..Default::default()
        };
        // Token 0 (positive) from the prompt, 1 (negative) from both, 3 from output.
        let got = penalized(&LOGITS, &[0, 1, 1], &[1, 3], &p);
        assert_eq!(got, vec![1.0, -2.0, 0.5, 1.5, -2.0]);
        // A penalty below 1 rewards instead.
        let p = SamplingParams {
            repetition_penalty: 0.5,
            ..Default::default()
        };
        assert_eq!(
            penalized(&LOGITS, &[4], &[], &p),
            vec![2.0, -1.0, 0.5, 3.0, -1.0]
        );
    }

    #[test]
    fn presence_and_frequency_use_output_counts_only() {
        let p = SamplingParams {
            presence_penalty: 0.5,
            ..Default::default()
        };
        // Prompt tokens are not penalized by presence.
        assert_eq!(
            penalized(&LOGITS, &[0, 2], &[3, 3, 1], &p),
            vec![2.0, -1.5, 0.5, 2.5, -2.0]
        );
        let p = SamplingParams {
            frequency_penalty: 0.25,
            ..Default::default()
        };
        assert_eq!(
            penalized(&LOGITS, &[0], &[3, 3, 1, 3], &p),
            vec![2.0, -1.25, 0.5, 2.25, -2.0]
        );
        // Negative penalties encourage repetition.
        let p = SamplingParams {
            frequency_penalty: -1.0,
            ..Default::default()
        };
        assert_eq!(
            penalized(&LOGITS, &[], &[2, 2], &p),
            vec![2.0, -1.0, 2.5, 3.0, -2.0]
        );
    }

    #[test]
    fn all_penalties_combined() {
        let p = SamplingParams {
            repetition_penalty: 2.0,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..Default::default()
        };
        // 0: 2/2 = 1. 1: -1*2 - 0.25 - 0.5 = -2.75. 3: 3/2 - 0.5 - 0.5 = 0.5.
        let got = penalized(&LOGITS, &[0, 1], &[1, 3, 3], &p);
        assert_eq!(got, vec![1.0, -2.75, 0.5, 0.5, -2.0]);
    }

    #[test]
    fn counts_do_not_leak_between_calls_and_bad_ids_are_ignored() {
        let p = SamplingParams {
            frequency_penalty: 1.0,
            ..Default::default()
        };
        let mut counts = TokenCounts::default();
        let mut touched = Vec::new();
        let mut l = LOGITS.to_vec();
        apply_penalties(&mut l, &[], &[3, 3, 99], &p, &mut counts, &mut touched);
        assert_eq!(l, vec![2.0, -1.0, 0.5, 1.0, -2.0]);
        let mut l = LOGITS.to_vec();
        apply_penalties(&mut l, &[], &[3], &p, &mut counts, &mut touched);
        assert_eq!(l, vec![2.0, -1.0, 0.5, 2.0, -2.0]);
    }

    #[test]
    fn bias_adds_and_min_tokens_masks() {
        let p = SamplingParams {
            logit_bias: vec![(2, 10.0), (4, -1.0), (77, 5.0)],
            min_tokens: 2,
            stop_token_ids: vec![1],
            ..Default::default()
        };
        let mut l = LOGITS.to_vec();
        let mut touched = Vec::new();
        apply_logit_bias(&mut l, &p, &mut touched);
        assert_eq!(l, vec![2.0, -1.0, 10.5, 3.0, -3.0]);
        let ninf = f32::NEG_INFINITY;
        apply_min_tokens(&mut l, 1, &[3], &p, &mut touched);
        assert_eq!(l, vec![2.0, ninf, 10.5, ninf, -3.0]);
        let mut l = LOGITS.to_vec();
        apply_min_tokens(&mut l, 2, &[3], &p, &mut touched);
        assert_eq!(l, LOGITS.to_vec(), "no masking once min_tokens is reached");
        let p = SamplingParams {
            ignore_eos: true,
            ..p
        };
        apply_min_tokens(&mut l, 0, &[3], &p, &mut touched);
        assert_eq!(
            l,
            vec![2.0, ninf, 0.5, 3.0, -2.0],
            "ignore_eos leaves EOS unmasked"
        );
    }
}
