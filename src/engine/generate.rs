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
use crate::engine::model::Model;
use crate::engine::sampler::{Sampler, SamplerParams};
use crate::engine::tokenizer::{StreamDecoder, Tokenizer};
use crate::engine::EngineError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampler: SamplerParams,
    pub stop: Vec<String>,
}

/// Where a generation that another worker started stands, so this one can continue it
/// (failover). The continuation runs the same arithmetic as the first run: the prompt in one
/// prefill, then each produced token through the one-token decode path, sampling at every
/// step as the first run did (so a seeded sampler is at the same position) but keeping the
/// produced token. Its KV cache and logits are then bit-identical to the first run's, and
/// so is everything it generates after.
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
        let search_from = self.released.saturating_sub(self.stops.iter().map(String::len).max().unwrap_or(0));
        self.text.push_str(piece);
        let hit = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.text[search_from..].find(s.as_str()).map(|i| search_from + i))
            .min();
        if let Some(at) = hit {
            self.text.truncate(at);
            return (self.release_to(at), true);
        }
        // Keep back the longest tail that is a prefix of some stop string.
        let mut hold = 0;
        for s in &self.stops {
            for n in (1..s.len().min(self.text.len() + 1)).rev() {
                if self.text.is_char_boundary(self.text.len() - n) && s.starts_with(&self.text[self.text.len() - n..]) {
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

/// Generates from `prompt` (token ids), continuing `resume`, and calls `on_text` after every
/// token with the new text (possibly empty, while text is held back) and the token, unless
/// it was one of `resume`'s. `on_text` returning `Break` stops the generation at once with
/// [`FinishReason::Cancelled`].
pub fn generate(
    model: &Model,
    be: &dyn Backend,
    tok: &Tokenizer,
    prompt: &[u32],
    params: &GenerateParams,
    resume: &Resume,
    mut on_text: impl FnMut(&str, Option<u32>) -> ControlFlow<()>,
) -> Result<Generation, EngineError> {
    if prompt.is_empty() {
        return Err(EngineError::Tokenizer("the prompt is empty".into()));
    }
    let limit = model.config.context_length;
    if prompt.len() >= limit {
        return Err(EngineError::ContextFull { needed: prompt.len() + 1, limit });
    }
    let mut cache = model.new_cache(None);
    let mut sampler = Sampler::new(params.sampler.clone());
    let mut history = prompt.to_vec();
    let mut decoder = StreamDecoder::default();
    let mut stops = StopMatcher { stops: params.stop.clone(), text: String::new(), released: 0 };
    let mut out = Generation {
        token_ids: Vec::new(),
        text: String::new(),
        finish: FinishReason::Length,
        prefill_time: Duration::ZERO,
        decode_steps: 0,
        decode_time: Duration::ZERO,
    };
    let mut hit_stop_string = false;
    let mut replay = resume.tokens.iter().copied();
    let mut delivered = resume.text_bytes;
    // Text past what was already delivered.
    let mut fresh = |text: String| -> String {
        let skip = delivered.min(text.len());
        delivered -= skip;
        text.get(skip..).unwrap_or_default().to_string()
    };

    let t0 = Instant::now();
    let mut logits = model.forward(be, &mut cache, prompt)?;
    out.prefill_time = t0.elapsed();
    let t1 = Instant::now();
    while out.token_ids.len() < params.max_tokens {
        let sampled = sampler.sample(&mut logits, &history);
        let replayed = replay.next();
        let next = replayed.unwrap_or(sampled);
        if replayed.is_some_and(|t| t != sampled) {
            tracing::debug!(sampled, replayed = next, "a resumed generation keeps the token the first run produced");
        }
        if replayed.is_none() && tok.is_end_of_generation(next) {
            out.finish = FinishReason::Stop;
            break;
        }
        out.token_ids.push(next);
        history.push(next);
        let (text, hit) = stops.push(&decoder.push(tok, next));
        out.text.push_str(&text);
        if on_text(&fresh(text), replayed.is_none().then_some(next)).is_break() {
            out.finish = FinishReason::Cancelled;
            out.decode_time = t1.elapsed();
            return Ok(out);
        }
        if hit {
            out.finish = FinishReason::Stop;
            hit_stop_string = true;
            break;
        }
        if out.token_ids.len() == params.max_tokens || cache.len() >= limit {
            break;
        }
        logits = model.forward(be, &mut cache, &[next])?;
        out.decode_steps += 1;
    }
    out.decode_time = t1.elapsed();
    if !hit_stop_string {
        // Release what was held back for a possible stop string or an unfinished character.
        let (text, hit) = stops.push(&decoder.finish());
        let rest = if hit { text } else { text + &stops.finish() };
        out.text.push_str(&rest);
        if on_text(&fresh(rest), None).is_break() {
            out.finish = FinishReason::Cancelled;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::StopMatcher;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher { stops: stops.iter().map(|s| s.to_string()).collect(), text: String::new(), released: 0 };
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
        assert_eq!(run(&["END"], &["abc E", "N", "D tail"]), ("abc ".to_string(), true));
    }

    #[test]
    fn held_back_text_is_released_when_it_cannot_be_a_stop() {
        assert_eq!(run(&["END"], &["abc E", "x"]), ("abc Ex".to_string(), false));
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        assert_eq!(run(&["world", "lo w"], &["hello world"]), ("hel".to_string(), true));
    }
}
