//! One sequence's sampler: its parameters, its RNG stream, and the per-step
//! pipeline from a logits row to a token.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::logprobs::{log_sum_exp, logprob, top_logprobs};
use super::params::SamplingParams;
use super::penalties::{apply_logit_bias, apply_min_tokens, apply_penalties, TokenCounts, Touched};
use super::select::{argmax, draw, filter, Filters, SelectScratch};
use crate::constraint::is_allowed;

/// Vocabulary-sized scratch buffers.
#[derive(Default)]
struct Scratch {
    counts: TokenCounts,
    select: SelectScratch,
}

thread_local! {
    // Shared by all samplers running on a thread rather than owned by each
    // sampler: with 150k-token vocabularies the buffers are ~2 MB, which would
    // cost hundreds of MB across a few hundred live sequences, while only as
    // many can be in use at once as there are sampling threads.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The token chosen for one sequence in one step.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledToken {
    /// The sampled token id.
    pub token: u32,
    /// Its logprob under the raw logits; `Some` iff `params.logprobs` is.
    pub logprob: Option<f32>,
    /// The `params.logprobs` most likely tokens under the raw logits, by
    /// logprob descending, ties by lower id (empty when not requested or 0).
    pub top_logprobs: Vec<(u32, f32)>,
}

/// One sequence's sampler: its params and RNG. Same seed => same tokens,
/// whatever else runs, since each sequence draws from its own stream.
pub struct Sampler {
    params: Arc<SamplingParams>,
    seed: u64,
    rng: StdRng,
    /// Values overwritten by the logit processors, to restore the raw row.
    touched: Touched,
}

impl fmt::Debug for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampler")
            .field("params", &self.params)
            .field("seed", &self.seed)
            .finish()
    }
}

/// SplitMix64's output function: a bijective mixer, so distinct inputs give
/// distinct, well-spread seeds.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The RNG seed of sample `index` of a request seeded with `seed`: the
/// `index`-th output of a SplitMix64 stream started at `seed`. Distinct
/// indices of one request always get distinct streams, and (unlike
/// `seed + index`) sample 1 of seed s does not coincide with sample 0 of s + 1.
fn stream_seed(seed: u64, index: usize) -> u64 {
    splitmix64(seed.wrapping_add((index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)))
}

impl Sampler {
    /// A sampler for sample `sample_index` (0..n) of a request. The RNG is
    /// seeded from `params.seed` (or a random seed from `rand::rng()` if
    /// `None`), mixed with `sample_index` so the n samples of one seeded
    /// request differ but are reproducible.
    pub fn new(params: Arc<SamplingParams>, sample_index: usize) -> Self {
        let seed = params.seed.unwrap_or_else(|| rand::rng().random());
        let rng = StdRng::seed_from_u64(stream_seed(seed, sample_index));
        Self {
            params,
            seed,
            rng,
            touched: Vec::new(),
        }
    }

    /// The request's parameters.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The request-level seed in use (the drawn one when `params.seed` is `None`).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Samples the next token from `logits` (one row of length vocab_size,
    /// used as scratch: its contents on return are unspecified).
    ///
    /// `prompt` and `output` are the sequence's tokens so far (for the
    /// penalties and min_tokens); `eos_token_ids` are the model's end tokens.
    /// Pipeline (vLLM's order): logprobs from the raw row; repetition,
    /// frequency and presence penalties; logit_bias; min_tokens masking of
    /// `stop_token_ids` and (unless `ignore_eos`) EOS; then greedy argmax (ties
    /// to the lowest id) or temperature, min_p, top_k, top_p and one draw.
    ///
    /// Fallback: if processing leaves no drawable token (every logit -inf or
    /// NaN), the result is the argmax of the raw row (lowest id on ties), or
    /// token 0 if the raw row has no finite logit either; an empty row also
    /// gives token 0. Non-greedy steps always consume exactly one draw from the
    /// RNG, so the stream position depends only on the step count.
    pub fn sample(
        &mut self,
        logits: &mut [f32],
        prompt: &[u32],
        output: &[u32],
        eos_token_ids: &[u32],
    ) -> SampledToken {
        self.sample_masked(logits, prompt, output, eos_token_ids, None)
    }

    /// [`Sampler::sample`] restricted to the tokens set in `allowed` (a
    /// bitmask, bit `t % 32` of word `t / 32`; tokens past its end are
    /// disallowed), from a constraint. The mask applies after the penalties,
    /// bias and min_tokens, before temperature and the filters; logprobs stay
    /// those of the raw row, as without a mask. If processing leaves nothing
    /// drawable, the fallback is the allowed token with the highest raw logit.
    pub fn sample_masked(
        &mut self,
        logits: &mut [f32],
        prompt: &[u32],
        output: &[u32],
        eos_token_ids: &[u32],
        allowed: Option<&[u32]>,
    ) -> SampledToken {
        let Self {
            params,
            rng,
            touched,
            ..
        } = self;
        let p: &SamplingParams = params;
        // Raw logprobs first: everything below writes into `logits`.
        let lse = p.logprobs.map(|_| log_sum_exp(logits));
        let mut top = Vec::new();
        if let (Some(k), Some(lse)) = (p.logprobs, lse) {
            top_logprobs(logits, k, lse, &mut top);
        }

        touched.clear();
        let u: Option<f64> = (!p.is_greedy()).then(|| rng.random());
        let chosen = SCRATCH.with_borrow_mut(|s| {
            apply_penalties(logits, prompt, output, p, &mut s.counts, touched);
            apply_logit_bias(logits, p, touched);
            apply_min_tokens(logits, output.len(), eos_token_ids, p, touched);
            if let Some(mask) = allowed {
                apply_mask(logits, mask, touched);
            }
            match u {
                None => argmax(logits),
                Some(u) => {
                    let f = Filters {
                        inv_temperature: 1.0 / p.temperature,
                        min_p: p.min_p,
                        top_k: p.top_k,
                        top_p: p.top_p,
                    };
                    // A degenerate random path (e.g. NaN parameters from an
                    // unvalidated request) degrades to greedy, not a panic.
                    filter(logits, &f, &mut s.select)
                        .and_then(|kept| draw(kept, &s.select, u))
                        .or_else(|| argmax(logits))
                }
            }
        });
        // Back to the raw row: for the chosen token's logprob and the fallback.
        for &(t, v) in touched.iter().rev() {
            logits[t as usize] = v;
        }
        let token = chosen
            .or_else(|| match allowed {
                Some(mask) => argmax_allowed(logits, mask),
                None => argmax(logits),
            })
            .unwrap_or(0);
        let logprob = match (lse, logits.get(token as usize)) {
            (Some(lse), Some(&x)) => Some(logprob(x, lse)),
            (Some(_), None) => Some(f32::NEG_INFINITY),
            (None, _) => None,
        };
        SampledToken {
            token,
            logprob,
            top_logprobs: top,
        }
    }
}

/// Sets every token not in `mask` to -inf, remembering the values.
fn apply_mask(logits: &mut [f32], mask: &[u32], touched: &mut Touched) {
    for (t, l) in logits.iter_mut().enumerate() {
        if !is_allowed(mask, t as u32) && *l != f32::NEG_INFINITY {
            touched.push((t as u32, *l));
            *l = f32::NEG_INFINITY;
        }
    }
}

/// The allowed token with the highest (non-NaN) logit, lowest id on ties.
fn argmax_allowed(logits: &[f32], mask: &[u32]) -> Option<u32> {
    let mut best: Option<(u32, f32)> = None;
    for (t, &l) in logits.iter().enumerate() {
        if is_allowed(mask, t as u32) && !l.is_nan() && best.is_none_or(|(_, b)| l > b) {
            best = Some((t as u32, l));
        }
    }
    best.map(|(t, _)| t)
}
