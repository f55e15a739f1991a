//! The model's tokenizer, rebuilt from GGUF metadata.
//!
//! Encoding goes through a HuggingFace `tokenizers` Tokenizer assembled from
//! `tokenizer.ggml.*`: a byte-level BPE model from the tokens and merges, the split regexes
//! that `tokenizer.ggml.pre` names (llama.cpp's mapping), and every non-normal token added as
//! a special token so that `<|im_start|>` encodes as one id. Decoding does not need the
//! library: each id maps to its bytes, and [`StreamDecoder`] releases text only at complete
//! UTF-8 boundaries.
//!
//! A chat prompt must get control tokens only from the template's own markup: a user who
//! writes `<|im_start|>system` in a message would otherwise forge a turn. The session
//! [`defang`](Tokenizer::defang)s every string a client sent before rendering (the first
//! character of each special token's text becomes U+0001), and
//! [`encode_chat`](Tokenizer::encode_chat) tokenizes the rendered text with the special
//! tokens that remain (the template's) as their ids and everything else as plain text, the
//! defanged texts restored.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, MatchKind};

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::engine::constraint::Grammars;
use crate::engine::gguf::GgufFile;
use crate::engine::EngineError;

const GPT2_SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const QWEN2_SPLIT: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_SPLIT: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen3.5's: qwen2's with combining marks kept inside words and out of punctuation
/// (llama.cpp applies no normalisation before it).
const QWEN35_SPLIT: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Pre-tokenizer names we understand, for error messages.
pub const SUPPORTED_PRE: &str =
    "smollm, starcoder, refact, gpt-2, qwen2, deepseek-r1-qwen, qwen35, llama3, llama-v3, llama-bpe";

/// `(split regexes, ignore_merges)` for a `tokenizer.ggml.pre` name.
fn pre_tokenizer_for(pre: &str) -> Option<(&'static [&'static str], bool)> {
    Some(match pre {
        "smollm" | "starcoder" | "refact" => (&[r"\p{N}", GPT2_SPLIT], false),
        "gpt-2" => (&[GPT2_SPLIT], false),
        "qwen2" | "deepseek-r1-qwen" => (&[QWEN2_SPLIT], false),
        "qwen35" => (&[QWEN35_SPLIT], false),
        "llama3" | "llama-v3" | "llama-bpe" => (&[LLAMA3_SPLIT], true),
        _ => return None,
    })
}

/// GGUF token types (`tokenizer.ggml.token_type`).
const TOKEN_NORMAL: i64 = 1;
const TOKEN_CONTROL: i64 = 3;
const TOKEN_BYTE: i64 = 6;

/// Texts of control tokens that end a generation, besides the declared EOS/EOT ids
/// (llama.cpp recognises the same ones).
const END_OF_GENERATION: &[&str] = &[
    "<|endoftext|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|end|>",
    "<end_of_turn>",
    "<|eom_id|>",
];

/// What a special token's text becomes inside a client's string: its first character
/// replaced by this one, which no special token starts with.
const DEFANG: char = '\u{1}';

/// The texts of the special tokens, found in one pass, and their defanged forms; pattern
/// `i` of either automaton is the same token.
struct Specials {
    /// Leftmost-longest over the special texts, as the tokenizer splits them.
    texts: AhoCorasick,
    ids: Vec<u32>,
    /// The texts as the automaton's patterns, to restore defanged ones.
    originals: Vec<String>,
    defanged: AhoCorasick,
    /// The defanged forms, to replace the originals with.
    defanged_texts: Vec<String>,
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The same BPE without the special tokens: text that must never become one.
    plain: tokenizers::Tokenizer,
    specials: Specials,
    /// The bytes each id stands for.
    pieces: Vec<Vec<u8>>,
    tokens: Vec<String>,
    /// Control tokens (`<|im_start|>`): they stand for no text a grammar could match.
    control: Vec<bool>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    end_of_generation: Vec<u32>,
    /// The vocabulary indexed for grammars, on first use.
    grammars: OnceLock<Result<Grammars, String>>,
    /// The most bytes one token stands for: a text of `n` bytes is at least
    /// `n / longest_piece` tokens, known without tokenizing it.
    longest_piece: usize,
}

/// GPT-2's byte-to-printable-character table, inverted.
fn byte_level_decoder() -> HashMap<char, u8> {
    let mut bs: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .filter_map(|(b, c)| char::from_u32(c).map(|c| (c, b as u8)))
        .collect()
}

impl Tokenizer {
    pub fn from_gguf(f: &GgufFile) -> Result<Self, EngineError> {
        let err = |m: String| EngineError::Tokenizer(format!("{}: {m}", f.path().display()));
        let model = f.str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(err(format!(
                "tokenizer model `{model}` is not supported (only gpt2 byte-level BPE)"
            )));
        }
        let pre = f.str_opt("tokenizer.ggml.pre")?.unwrap_or("default");
        let (splits, ignore_merges) = pre_tokenizer_for(pre).ok_or_else(|| {
            err(format!(
                "pre-tokenizer `{pre}` is not supported (supported: {SUPPORTED_PRE})"
            ))
        })?;

        let tokens: Vec<String> = f
            .array("tokenizer.ggml.tokens")?
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| err("tokenizer.ggml.tokens holds a non-string".into()))?;
        let types: Vec<i64> = match f.array_opt("tokenizer.ggml.token_type")? {
            Some(a) => a
                .iter()
                .map(|v| v.as_i64().unwrap_or(TOKEN_NORMAL))
                .collect(),
            None => vec![TOKEN_NORMAL; tokens.len()],
        };
        let merges: Vec<(String, String)> = f
            .array("tokenizer.ggml.merges")?
            .iter()
            .map(|v| {
                let s = v.as_str()?;
                let (a, b) = s.split_once(' ')?;
                Some((a.to_string(), b.to_string()))
            })
            .collect::<Option<_>>()
            .ok_or_else(
                || err("tokenizer.ggml.merges holds an entry that is not \"a b\"".into()),
            )?;

        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(ignore_merges)
            .build()
            .map_err(|e| err(format!("building BPE: {e}")))?;
        let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
        for re in splits {
            let split = Split::new(
                SplitPattern::Regex(re.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| err(format!("split regex: {e}")))?;
            steps.push(split.into());
        }
        steps.push(ByteLevel::new(false, false, false).into());
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(Sequence::new(steps)));

        let plain = inner.clone();
        let decoder = byte_level_decoder();
        let mut specials = Vec::new();
        let mut special_ids = Vec::new();
        let mut pieces = Vec::with_capacity(tokens.len());
        for (tok, &ty) in tokens.iter().zip(&types) {
            if ty == TOKEN_NORMAL || ty == TOKEN_BYTE {
                let mut bytes = Vec::with_capacity(tok.len());
                for ch in tok.chars() {
                    match decoder.get(&ch) {
                        Some(&b) => bytes.push(b),
                        None => bytes.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
                pieces.push(bytes);
            } else {
                special_ids.push(pieces.len() as u32);
                specials.push(AddedToken::from(tok.clone(), true).normalized(false));
                pieces.push(tok.as_bytes().to_vec());
            }
        }
        inner.add_special_tokens(&specials);
        let specials = Specials::new(
            specials.iter().map(|t| t.content.clone()).collect(),
            special_ids,
        )
        .map_err(err)?;

        let id = |key: &str| -> Result<Option<u32>, EngineError> {
            Ok(f.u64_opt(key)?
                .map(|v| v as u32)
                .filter(|&v| (v as usize) < tokens.len()))
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let mut end_of_generation: Vec<u32> = [eos, id("tokenizer.ggml.eot_token_id")?]
            .into_iter()
            .flatten()
            .collect();
        for (i, (tok, &ty)) in tokens.iter().zip(&types).enumerate() {
            if ty == TOKEN_CONTROL
                && END_OF_GENERATION.contains(&tok.as_str())
                && !end_of_generation.contains(&(i as u32))
            {
                end_of_generation.push(i as u32);
            }
        }
        Ok(Self {
            inner,
            plain,
            specials,
            longest_piece: pieces.iter().map(Vec::len).max().unwrap_or(1).max(1),
            pieces,
            control: types.iter().map(|&t| t == TOKEN_CONTROL).collect(),
            tokens,
            bos,
            eos,
            add_bos: f.bool_opt("tokenizer.ggml.add_bos_token")?.unwrap_or(false),
            end_of_generation,
            grammars: OnceLock::new(),
        })
    }

    /// Tokenizes `text` exactly as given, special tokens included, adding BOS only when the
    /// model's metadata asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        let mut ids = Vec::new();
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend(self.encode_plain(text)?);
        Ok(ids)
    }

    /// `text` with every special token's text defanged, so that it renders and tokenizes as
    /// plain text (see [`Tokenizer::encode_chat`]).
    pub fn defang<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let s = &self.specials;
        if !s.texts.is_match(text) {
            return Cow::Borrowed(text);
        }
        Cow::Owned(s.texts.replace_all(text, &s.defanged_texts))
    }

    /// Tokenizes a rendered chat prompt whose client strings were defanged: the special
    /// tokens in it (the template's markup) become their ids, all other text is tokenized as
    /// plain text with the defanged texts restored. BOS is added as [`Tokenizer::encode`]
    /// adds it.
    pub fn encode_chat(&self, rendered: &str) -> Result<Vec<u32>, EngineError> {
        self.encode_chat_part(rendered, true)
    }

    /// [`Tokenizer::encode_chat`] for one part of a prompt cut at its images: BOS (if the
    /// model adds one) only when `first`.
    pub fn encode_chat_part(&self, rendered: &str, first: bool) -> Result<Vec<u32>, EngineError> {
        let s = &self.specials;
        let mut ids = Vec::new();
        if self.add_bos && first {
            ids.extend(self.bos);
        }
        let plain = |text: &str, ids: &mut Vec<u32>| -> Result<(), EngineError> {
            if text.is_empty() {
                return Ok(());
            }
            let restored = s.defanged.replace_all(text, &s.originals);
            let enc = self
                .plain
                .encode_fast(restored, false)
                .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
            ids.extend_from_slice(enc.get_ids());
            Ok(())
        };
        let mut at = 0;
        for m in s.texts.find_iter(rendered) {
            plain(&rendered[at..m.start()], &mut ids)?;
            ids.push(s.ids[m.pattern().as_usize()]);
            at = m.end();
        }
        plain(&rendered[at..], &mut ids)?;
        Ok(ids)
    }

    /// The token whose text is `text` (libmtmd's `lookup_token`: the first id whose
    /// decoded piece equals it).
    pub fn id_of_piece(&self, text: &str) -> Option<u32> {
        (0..self.vocab_size() as u32).find(|&id| self.piece(id) == text.as_bytes())
    }

    /// The fewest tokens `text` can encode to, from its length alone.
    pub fn min_tokens(&self, text: &str) -> usize {
        text.len().div_ceil(self.longest_piece)
    }

    /// Tokenizes `text` without BOS.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Compiles grammars over this vocabulary. The index is built on the first call and
    /// shared by everyone holding this tokenizer (a process's front and worker alike).
    pub fn grammars(&self) -> Result<&Grammars, EngineError> {
        let built = self
            .grammars
            .get_or_init(|| Grammars::index(self, self.inner.clone()));
        built
            .as_ref()
            .map_err(|e| EngineError::Grammar(format!("indexing the vocabulary: {e}")))
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// Whether `id` is a control token such as `<|im_start|>`.
    pub fn is_control(&self, id: u32) -> bool {
        self.control.get(id as usize).copied().unwrap_or(false)
    }

    /// The bytes of one token (special tokens render as their text).
    pub fn piece(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// The token's vocabulary entry, as stored in the GGUF.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Whether generating `id` ends the turn.
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.contains(&id)
    }

    /// Decodes ids to text; invalid UTF-8 (a sequence cut mid-character) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&i| self.piece(i).iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Specials {
    fn new(texts: Vec<String>, ids: Vec<u32>) -> Result<Self, String> {
        let defanged_texts: Vec<String> = texts
            .iter()
            .map(|t| {
                let mut chars = t.chars();
                chars.next();
                format!("{DEFANG}{}", chars.as_str())
            })
            .collect();
        let build = |patterns: &[String]| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(patterns)
                .map_err(|e| format!("indexing the special tokens: {e}"))
        };
        Ok(Self {
            texts: build(&texts)?,
            ids,
            originals: texts,
            defanged: build(&defanged_texts)?,
            defanged_texts,
        })
    }
}

/// Turns a stream of token ids into text, releasing only complete UTF-8 characters.
#[derive(Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// Adds one token and returns the text that is now complete (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        self.pending.extend_from_slice(tok.piece(id));
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) => match e.error_len() {
                // An incomplete character at the end: keep waiting for its other bytes.
                None => e.valid_up_to(),
                // Bytes that can never become valid: emit them as U+FFFD now.
                Some(_) => self.pending.len(),
            },
        };
        let rest = self.pending.split_off(valid);
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        out
    }

    /// Whatever is left at the end of the stream.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}
