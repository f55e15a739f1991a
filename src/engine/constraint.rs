//! Constrained decoding: a grammar decides which tokens may come next, and every other
//! token's logit is set to minus infinity before sampling, so the output *is* a sentence of
//! the grammar (a tool call whose arguments fit the function's schema, JSON that fits a
//! `response_format` schema) however small the model.
//!
//! Grammars are llguidance's Lark dialect (JSON schemas inline with `%json {...}`), compiled
//! against this model's vocabulary. [`Grammars`] holds the indexed vocabulary (a token trie;
//! [`Tokenizer::grammars`] builds it once, on the first grammar, for everyone holding that
//! tokenizer); each sequence gets its own [`Constraint`], the parser state that follows its
//! tokens. The end-of-generation token is allowed only where the grammar may end.
//!
//! A constrained output must also *end* validly when its token budget runs out, or a small
//! model writing an unbounded string leaves cut JSON. [`Constraint::ending`] finds a short
//! valid ending from the parser's current state (closing strings, objects and arrays first,
//! the shortest values where more is required), and the decoder switches to it once the
//! budget left is no more than its length (see [`crate::engine::generate`]).

use std::sync::Arc;

use llguidance::api::{StopReason, TopLevelGrammar};
use llguidance::toktrie::{TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};

use crate::engine::tokenizer::Tokenizer;
use crate::engine::EngineError;

/// The vocabulary as llguidance sees it: each token's bytes, control tokens marked special,
/// and the model's own tokenizer for text it must tokenize.
struct Vocabulary {
    trie: TokTrie,
    encoder: tokenizers::Tokenizer,
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        match std::str::from_utf8(s)
            .ok()
            .map(|text| self.encoder.encode_fast(text, false))
        {
            Some(Ok(enc)) => enc.get_ids().to_vec(),
            // Bytes that are not text (a cut character) or that the tokenizer refuses.
            _ => self.trie.greedy_tokenize(s),
        }
    }
}

/// Compiles grammars for one model's vocabulary.
pub struct Grammars {
    factory: ParserFactory,
}

impl Grammars {
    /// Indexes `tok`'s vocabulary (~100 ms for 49k tokens); `encoder` is its text tokenizer.
    pub(crate) fn index(tok: &Tokenizer, encoder: tokenizers::Tokenizer) -> Result<Self, String> {
        let eos = tok
            .eos
            .ok_or("the model declares no end-of-sequence token")?;
        let words: Vec<Vec<u8>> = (0..tok.vocab_size() as u32)
            .map(|id| {
                let piece = tok.piece(id);
                if tok.is_control(id) {
                    [&[TokTrie::SPECIAL_TOKEN_MARKER][..], piece].concat()
                } else {
                    piece.to_vec()
                }
            })
            .collect();
        let trie = TokTrie::from(&TokRxInfo::new(words.len() as u32, eos), &words);
        let env = Arc::new(Vocabulary { trie, encoder });
        let mut factory = ParserFactory::new_simple(&(env as _)).map_err(|e| e.to_string())?;
        factory.quiet();
        Ok(Self { factory })
    }

    /// Compiles a Lark grammar into a fresh constraint at the start of the output.
    pub fn compile(&self, lark: &str) -> Result<Constraint, EngineError> {
        let parser = self
            .factory
            .create_parser(TopLevelGrammar::from_lark(lark.to_string()))
            .map_err(|e| EngineError::Grammar(e.to_string()))?;
        Ok(Constraint {
            matcher: Matcher::new(Ok(parser)),
        })
    }

    /// Compiles a grammar and computes its first mask, so that one the parser cannot run
    /// (llguidance's "too complex" limits hit at the start) fails here rather than ending a
    /// generation before its first token.
    pub fn check(&self, lark: &str) -> Result<(), EngineError> {
        let mut c = self.compile(lark)?;
        let mut logits = Vec::new();
        c.mask(&mut logits)
    }
}

/// One sequence's place in its grammar.
pub struct Constraint {
    matcher: Matcher,
}

/// Bytes tried first when writing an ending: what closes a string, an object or an array,
/// what ends a member (where required ones are still missing), then the shortest values.
const CLOSERS: &[u8] = b"\"}],0tfn";
/// Bytes tried next, where the grammar wants more (a required key, a minimum length, a
/// pattern, the markup around a call): anything printable, white space last.
const FILLERS: &[u8] =
    b"123456789:[{abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-._+@#/=<>()!?*&%$^|~`';\\\n ";
/// The longest ending looked for, in tokens.
const MAX_ENDING: usize = 256;

impl Constraint {
    /// Sets the logit of every token the grammar does not allow next to minus infinity.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<(), EngineError> {
        let allowed = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| EngineError::Grammar(e.to_string()))?;
        // A parser that gave up (too complex) stops and allows only the end: that is a
        // failure, not the end of a valid output.
        match self.matcher.stop_reason() {
            StopReason::InternalError
            | StopReason::LexerTooComplex
            | StopReason::ParserTooComplex
            | StopReason::Cancelled => {
                return Err(EngineError::Grammar(format!(
                    "the grammar gave up: {}",
                    self.matcher
                        .get_error()
                        .unwrap_or_else(|| self.matcher.stop_reason().to_string())
                )))
            }
            _ => {}
        }
        let vocab = allowed.len().min(logits.len());
        allowed.iter_unset_entries(|i| {
            if i < vocab {
                logits[i] = f32::NEG_INFINITY;
            }
        });
        // Rows past the vocabulary (padding in the output matrix) are never text.
        logits[vocab..].fill(f32::NEG_INFINITY);
        Ok(())
    }

    /// The tokens of a short valid ending from here (empty when the grammar may end now),
    /// or `None` when none was found within [`MAX_ENDING`] tokens. It walks a copy of the
    /// parser: forced tokens as they are, else the first of [`CLOSERS`] then [`FILLERS`]
    /// the grammar allows; then the walk's text is tokenized as the model would write it,
    /// which is used when the grammar takes it and is shorter.
    pub fn ending(&self) -> Option<Vec<u32>> {
        let mut m = self.matcher.deep_clone();
        let env = m.tok_env().ok()?;
        let trie = env.tok_trie();
        let mut walk: Vec<u32> = Vec::new();
        while walk.len() < MAX_ENDING {
            if m.is_accepting().ok()? {
                break;
            }
            let forced = m.compute_ff_tokens();
            if !forced.is_empty() {
                m.consume_tokens(&forced).ok()?;
                walk.extend(forced);
                continue;
            }
            // A byte taken twice running is not taken a third time: `0.000...` under an
            // exclusive minimum of 0 would never end.
            let repeats = |t: u32| walk.len() >= 2 && walk[walk.len() - 2..] == [t, t];
            let next = CLOSERS.iter().chain(FILLERS).find_map(|&b| {
                let t = trie.token_id(&[b]).filter(|&t| !repeats(t))?;
                (m.validate_tokens(&[t]).ok()? == 1).then_some(t)
            })?;
            m.consume_token(next).ok()?;
            walk.push(next);
        }
        if !m.is_accepting().ok()? {
            return None;
        }
        let bytes: Vec<u8> = walk.iter().flat_map(|&t| trie.decode(&[t])).collect();
        let retokenized = env.tokenize_bytes(&bytes);
        if retokenized.len() < walk.len() {
            let mut check = self.matcher.deep_clone();
            if check.validate_tokens(&retokenized).ok()? == retokenized.len()
                && check.consume_tokens(&retokenized).is_ok()
                && check.is_accepting().ok()?
            {
                return Some(retokenized);
            }
        }
        Some(walk)
    }

    /// Moves past `token`, which the last mask allowed.
    pub fn accept(&mut self, token: u32) -> Result<(), EngineError> {
        self.matcher
            .consume_token(token)
            .map_err(|e| EngineError::Grammar(e.to_string()))
    }
}
