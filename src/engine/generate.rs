//! The decode loop for one sequence: prefill the prompt, then sample token by token,
//! streaming text as it completes and stopping at end-of-generation tokens, stop strings or
//! the token limit.
//!
//! Stop strings are matched on decoded text, so a stop that spans several tokens is caught.
//! Text that might be the start of a stop string is held back until it is known not to be,
//! so streamed text never contains a stop string.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::engine::backend::Backend;
use crate::engine::constraint::Constraint;
use crate::engine::model::Model;
use crate::engine::sampler::{Sampler, SamplerParams};
use crate::engine::tokenizer::{StreamDecoder, Tokenizer};
use crate::engine::EngineError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampler: SamplerParams,
    pub stop: Vec<String>,
    /// A Lark grammar (llguidance's dialect) the output must follow; see [`crate::engine::constraint`].
    #[serde(default)]
    pub grammar: Option<String>,
    /// Report each produced token's log-probability and this many top alternatives.
    #[serde(default)]
    pub logprobs: Option<usize>,
    /// Added to these tokens' logits before anything else looks at them.
    #[serde(default)]
    pub logit_bias: Vec<(u32, f32)>,
}

/// A produced token's log-probability and the most likely tokens at its position, from the
/// model's distribution after `logit_bias` and the grammar, before the penalties,
/// temperature and top-k/top-p/min-p: the distribution the sampler starts from, so a
/// greedy choice is always the top entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    /// Most likely first (ties by token id).
    pub top: Vec<(u32, f32)>,
}

impl TokenLogprob {
    /// `token`'s entry in the log-softmax of `logits`, with the `k` most likely tokens.
    pub fn of(logits: &[f32], token: u32, k: usize) -> Self {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
        let lse = max + sum.ln() as f32;
        let mut top: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
        for (i, &l) in logits.iter().enumerate() {
            if top.len() == k && top.last().is_none_or(|&(_, worst)| l <= worst) {
                continue;
            }
            let at = top.partition_point(|&(_, v)| v >= l);
            top.insert(at, (i as u32, l));
            top.truncate(k);
        }
        Self {
            token,
            logprob: logits
                .get(token as usize)
                .map_or(f32::NEG_INFINITY, |&l| l - lse),
            top: top.into_iter().map(|(i, l)| (i, l - lse)).collect(),
        }
    }
}

/// Where a generation that another worker started stands, so this one can continue it
/// (failover). The batch scheduler computes every row with batch-invariant arithmetic, so
/// running the prompt and the produced tokens through one prefill gives the same cache as
/// the first run's decoding; the sampler is advanced past each produced token, so a seeded
/// generation continues exactly too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// Tokens already produced, in order.
    pub tokens: Vec<u32>,
    /// Bytes of text already delivered; the continuation does not deliver them again.
    pub text_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The consumer of the text asked to stop (a client went away).
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated ids; an end-of-generation token is not included.
    pub token_ids: Vec<u32>,
    /// Generated text, cut before a matched stop string.
    pub text: String,
    pub finish: FinishReason,
    pub prefill_time: Duration,
    /// Forward passes after the prompt, and the time they took.
    pub decode_steps: usize,
    pub decode_time: Duration,
    /// Each produced token's log-probability, when the params ask for them.
    pub logprobs: Vec<TokenLogprob>,
}

/// Holds back text that could still turn into a stop string.
struct StopMatcher {
    stops: Vec<String>,
    /// All text so far.
    text: String,
    /// How much of `text` has been released.
    released: usize,
}

impl StopMatcher {
    /// Adds text; returns what can be released now and whether a stop string matched.
    fn push(&mut self, piece: &str) -> (String, bool) {
        let mut search_from = self
            .released
            .saturating_sub(self.stops.iter().map(String::len).max().unwrap_or(0));
        while !self.text.is_char_boundary(search_from) {
            search_from -= 1; // a stop string may begin inside a multi-byte character
        }
        self.text.push_str(piece);
        let hit = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| {
                self.text[search_from..]
                    .find(s.as_str())
                    .map(|i| search_from + i)
            })
            .min();
        if let Some(at) = hit {
            self.text.truncate(at);
            return (self.release_to(at), true);
        }
        // Keep back the longest tail that is a prefix of some stop string.
        let mut hold = 0;
        for s in &self.stops {
            for n in (1..s.len().min(self.text.len() + 1)).rev() {
                if self.text.is_char_boundary(self.text.len() - n)
                    && s.starts_with(&self.text[self.text.len() - n..])
                {
                    hold = hold.max(n);
                    break;
                }
            }
        }
        let until = (self.text.len() - hold).max(self.released);
        (self.release_to(until), false)
    }

    fn release_to(&mut self, until: usize) -> String {
        let out = self.text[self.released..until].to_string();
        self.released = until;
        out
    }

    fn finish(&mut self) -> String {
        self.release_to(self.text.len())
    }
}

/// What one token step gave.
#[derive(Debug, Default)]
pub struct Advance {
    /// Text to deliver now (possibly empty while text is held back).
    pub text: String,
    /// The new token, if one was produced (not on an end-of-generation token).
    pub token: Option<u32>,
    /// Set when the generation ended with this step.
    pub finish: Option<FinishReason>,
    /// The new token's log-probability, when the params ask for them.
    pub logprob: Option<TokenLogprob>,
    /// Set when the output's grammar failed (it gave up as too complex): the generation
    /// ends without a result, never as a silently shortened success.
    pub failed: Option<String>,
}

impl Advance {
    /// A step that failed the generation.
    fn failed(e: EngineError) -> Self {
        Self {
            failed: Some(e.to_string()),
            ..Self::default()
        }
    }
}

/// One sequence's generation apart from the model: it picks each token from the logits,
/// turns tokens into text (held back while it could still become a stop string) and decides
/// when the generation ends.
pub struct Decoding {
    sampler: Sampler,
    /// Prompt and produced tokens (for the penalties).
    history: Vec<u32>,
    prompt_len: usize,
    decoder: StreamDecoder,
    stops: StopMatcher,
    max_tokens: usize,
    context: usize,
    /// Text bytes an earlier attempt delivered that are not to be delivered again.
    delivered: usize,
    text: String,
    constraint: Option<Constraint>,
    /// The valid ending the constraint is being closed with, once the budget called for
    /// it: its tokens still to come.
    ending: Option<std::collections::VecDeque<u32>>,
    /// The length of the last ending found: how close to the budget's end to look again.
    ending_cost: usize,
    logprobs: Option<usize>,
    logit_bias: Vec<(u32, f32)>,
}

/// Tokens a constrained output may take past `max_tokens` to end validly, when the budget
/// is smaller than the shortest valid output (the session holds them too).
pub const ENDING_ALLOWANCE: usize = 64;
/// How far ahead of the budget's end the ending is looked for again: a token can lengthen
/// the ending by about this much.
const ENDING_LOOKAHEAD: usize = 8;

impl Decoding {
    /// Starts after `prompt`, continuing `resume` (its tokens count as produced, and the
    /// sampler moves past them), within `context` positions. Returns the state and what to
    /// deliver at once: text of the resumed tokens past what was delivered, and a finish if
    /// nothing is left to generate. `constraint` is `params.grammar` compiled.
    pub fn new(
        tok: &Tokenizer,
        prompt: &[u32],
        params: &GenerateParams,
        context: usize,
        resume: &Resume,
        constraint: Option<Constraint>,
    ) -> (Self, Advance) {
        let mut d = Self {
            sampler: Sampler::new(params.sampler.clone()),
            history: prompt.to_vec(),
            prompt_len: prompt.len(),
            decoder: StreamDecoder::default(),
            stops: StopMatcher {
                stops: params.stop.clone(),
                text: String::new(),
                released: 0,
            },
            max_tokens: params.max_tokens,
            context,
            delivered: resume.text_bytes,
            text: String::new(),
            ending_cost: usize::MAX,
            constraint,
            ending: None,
            logprobs: params.logprobs,
            logit_bias: params.logit_bias.clone(),
        };
        let mut first = Advance::default();
        for &t in &resume.tokens {
            d.sampler.skip();
            if let Err(e) = d.constraint.as_mut().map_or(Ok(()), |c| c.accept(t)) {
                tracing::warn!("a resumed token breaks the grammar: {e}");
                d.constraint = None;
            }
            let a = d.push(tok, t);
            first.text.push_str(&a.text);
            if a.finish.is_some() {
                first.finish = a.finish;
                return (d, first);
            }
        }
        if d.max_tokens == 0 {
            first.text.push_str(&d.finish());
            first.finish = Some(FinishReason::Length);
        }
        (d, first)
    }

    /// Tokens produced so far (the resumed ones included).
    pub fn produced(&self) -> &[u32] {
        &self.history[self.prompt_len..]
    }

    /// All text so far, cut before a matched stop string.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Samples the next token from `logits` (the last computed position's) and takes it.
    pub fn advance(&mut self, tok: &Tokenizer, logits: &mut [f32]) -> Advance {
        for &(id, bias) in &self.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += bias;
            }
        }
        if let Err(e) = self.constraint.as_mut().map_or(Ok(()), |c| c.mask(logits)) {
            tracing::warn!("the grammar failed; failing the generation: {e}");
            return Advance::failed(e);
        }
        // The sampler changes the logits in place; the log-probabilities are of these.
        let before = self.logprobs.map(|k| (logits.to_vec(), k));
        let next = match self.forced_ending() {
            Some(t) => {
                // The sampler's random stream moves as if it had sampled (a moved job
                // replays it the same way).
                self.sampler.skip();
                t
            }
            None => self.sampler.sample(logits, &self.history),
        };
        if tok.is_end_of_generation(next) {
            return self.end(FinishReason::Stop);
        }
        if let Err(e) = self.constraint.as_mut().map_or(Ok(()), |c| c.accept(next)) {
            tracing::warn!("the grammar refused a token it allowed; failing the generation: {e}");
            return Advance::failed(e);
        }
        let mut a = self.push(tok, next);
        a.token = Some(next);
        a.logprob = before.map(|(l, k)| TokenLogprob::of(&l, next, k));
        a
    }

    /// The next token of the valid ending, once the budget left is no more than the
    /// ending's length (a forced ending's tokens, one a step). Until then the ending is
    /// looked for again whenever the budget's end is near it, so a generation that never
    /// nears its budget pays nothing.
    fn forced_ending(&mut self) -> Option<u32> {
        let c = self.constraint.as_ref()?;
        if self.ending.is_none() {
            let left = self.max_tokens.saturating_sub(self.produced().len());
            if left > self.ending_cost.saturating_add(ENDING_LOOKAHEAD) {
                return None;
            }
            let found = c.ending()?;
            self.ending_cost = found.len();
            if found.is_empty() || found.len() < left {
                return None;
            }
            self.ending = Some(found.into());
        }
        self.ending.as_mut()?.pop_front()
    }

    /// Ends without a new token.
    fn end(&mut self, finish: FinishReason) -> Advance {
        let text = self.finish();
        Advance {
            text,
            finish: Some(finish),
            ..Advance::default()
        }
    }

    /// Takes `t` as the next token.
    fn push(&mut self, tok: &Tokenizer, t: u32) -> Advance {
        self.history.push(t);
        let (text, hit) = self.stops.push(&self.decoder.push(tok, t));
        self.text.push_str(&text);
        let mut a = Advance {
            text: self.fresh(text),
            ..Advance::default()
        };
        let ending = self.ending.as_ref().is_some_and(|e| !e.is_empty());
        if hit {
            a.finish = Some(FinishReason::Stop);
        } else if (self.produced().len() >= self.max_tokens && !ending)
            || self.produced().len() >= self.max_tokens + ENDING_ALLOWANCE
            || self.history.len() > self.context
        {
            // `history.len() - 1` positions are computed; the next token needs one more.
            a.text.push_str(&self.finish());
            a.finish = Some(FinishReason::Length);
        }
        a
    }

    /// Releases what was held back for a possible stop string or an unfinished character.
    fn finish(&mut self) -> String {
        let (text, hit) = self.stops.push(&self.decoder.finish());
        let rest = if hit {
            text
        } else {
            text + &self.stops.finish()
        };
        self.text.push_str(&rest);
        self.fresh(rest)
    }

    /// The part of `text` past what an earlier attempt delivered.
    fn fresh(&mut self, text: String) -> String {
        let skip = self.delivered.min(text.len());
        self.delivered -= skip;
        text.get(skip..).unwrap_or_default().to_string()
    }
}

/// Generates from `prompt` (token ids) alone, as llama.cpp would ([`Model::forward`]), and
/// calls `on_text` after every token with the new text (possibly empty, while text is held
/// back) and the token. `on_text` returning `Break` stops the generation at once with
/// [`FinishReason::Cancelled`].
pub fn generate(
    model: &Model,
    be: &dyn Backend,
    tok: &Tokenizer,
    prompt: &[u32],
    params: &GenerateParams,
    on_text: impl FnMut(&str, Option<u32>) -> ControlFlow<()>,
) -> Result<Generation, EngineError> {
    let mut cache = model.new_cache(None);
    generate_with(
        tok,
        prompt,
        params,
        model.config.context_length,
        &mut |t| model.forward(be, &mut cache, t),
        on_text,
    )
}

/// A forward pass over one sequence: the given tokens at its next positions in, the last
/// one's logits out.
pub type ForwardFn<'a> = dyn FnMut(&[u32]) -> Result<Vec<f32>, EngineError> + 'a;

/// [`generate`] over any forward pass (the CPU model's, or the GPU's) within `limit`
/// positions.
pub fn generate_with(
    tok: &Tokenizer,
    prompt: &[u32],
    params: &GenerateParams,
    limit: usize,
    forward: &mut ForwardFn<'_>,
    mut on_text: impl FnMut(&str, Option<u32>) -> ControlFlow<()>,
) -> Result<Generation, EngineError> {
    if prompt.is_empty() {
        return Err(EngineError::Tokenizer("the prompt is empty".into()));
    }
    if params.grammar.is_some() {
        return Err(EngineError::Grammar(
            "constrained generation runs in the batch scheduler".into(),
        ));
    }
    if prompt.len() >= limit {
        return Err(EngineError::ContextFull {
            needed: prompt.len() + 1,
            limit,
        });
    }
    let (mut decoding, first) = Decoding::new(tok, prompt, params, limit, &Resume::default(), None);
    let mut out = Generation {
        logprobs: Vec::new(),
        token_ids: Vec::new(),
        text: String::new(),
        finish: FinishReason::Length,
        prefill_time: Duration::ZERO,
        decode_steps: 0,
        decode_time: Duration::ZERO,
    };
    let t0 = Instant::now();
    let mut logits = forward(prompt)?;
    out.prefill_time = t0.elapsed();
    let t1 = Instant::now();
    let mut step = first;
    if step.finish.is_none() {
        step = decoding.advance(tok, &mut logits);
    }
    loop {
        if let Some(e) = step.failed {
            return Err(EngineError::Grammar(e));
        }
        out.logprobs.extend(step.logprob.take());
        if on_text(&step.text, step.token).is_break() {
            out.finish = FinishReason::Cancelled;
            break;
        }
        if let Some(f) = step.finish {
            out.finish = f;
            break;
        }
        let Some(next) = step.token else { break };
        logits = forward(&[next])?;
        out.decode_steps += 1;
        step = decoding.advance(tok, &mut logits);
    }
    out.decode_time = t1.elapsed();
    out.token_ids = decoding.produced().to_vec();
    out.text = decoding.text().to_string();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{StopMatcher, TokenLogprob};

    #[test]
    fn logprobs_are_the_log_softmax_with_the_top_entries_in_order() {
        let logits = [1.0f32, 3.0, f32::NEG_INFINITY, 3.0, 0.5];
        let lp = TokenLogprob::of(&logits, 4, 3);
        let lse = logits.iter().map(|l| l.exp()).sum::<f32>().ln();
        assert!((lp.logprob - (0.5 - lse)).abs() < 1e-6);
        let ids: Vec<u32> = lp.top.iter().map(|&(i, _)| i).collect();
        assert_eq!(ids, [1, 3, 0], "most likely first, ties by id");
        assert!(lp.top.iter().map(|&(_, l)| l.exp()).sum::<f32>() <= 1.0);
        assert!(TokenLogprob::of(&logits, 2, 0).top.is_empty());
        assert_eq!(TokenLogprob::of(&logits, 2, 0).logprob, f32::NEG_INFINITY);
    }

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher {
            stops: stops.iter().map(|s| s.to_string()).collect(),
            text: String::new(),
            released: 0,
        };
        let mut out = String::new();
        for p in pieces {
            let (t, hit) = m.push(p);
            out.push_str(&t);
            if hit {
                return (out, true);
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn a_stop_split_across_pieces_is_caught_and_never_streamed() {
        assert_eq!(
            run(&["END"], &["abc E", "N", "D tail"]),
            ("abc ".to_string(), true)
        );
    }

    #[test]
    fn held_back_text_is_released_when_it_cannot_be_a_stop() {
        assert_eq!(
            run(&["END"], &["abc E", "x"]),
            ("abc Ex".to_string(), false)
        );
    }

    #[test]
    fn multi_byte_text_before_a_stop_is_searched_from_a_character_boundary() {
        assert_eq!(
            run(&["\n\n"], &["ab", "\u{fffd}\u{fffd}", "c\n", "\nrest"]),
            ("ab\u{fffd}\u{fffd}c".to_string(), true)
        );
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        assert_eq!(
            run(&["world", "lo w"], &["hello world"]),
            ("hel".to_string(), true)
        );
    }
}
