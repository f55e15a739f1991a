//! Vision input: images through a GGUF vision tower (an "mmproj" file) into the language
//! model, as llama.cpp's `libmtmd` does it, so that our outputs equal llama.cpp's.
//!
//! The parts: [`tower`] (the mmproj file), [`preprocess`] (decoding, resizing, tiling),
//! [`encoder`] (the ViT and the projector), [`spans`] (where image rows sit in a sequence
//! and their positions), and here the layout of an image among the prompt's tokens and the
//! assembly of a prompt from text and images.

pub mod encoder;
pub mod preprocess;
pub mod spans;
pub mod tower;

use std::sync::Arc;

use crate::engine::tokenizer::Tokenizer;
use crate::engine::EngineError;
use preprocess::{ImageShape, Prepared, Rgb};
use spans::{ImageRun, ImageSpans};
use tower::{Projector, VisionConfig, VisionTower};

/// The text a chat template leaves where an image goes (llama.cpp's default marker).
pub const MARKER: &str = "<__media__>";

/// Longest side an image may have; larger ones are downscaled to it with the tower's own
/// resize filter (the product's limit: 1024 px).
pub const MAX_SIDE: usize = 1024;

/// Placeholder token at image rows (its embedding is never read).
const PLACEHOLDER: u32 = 0;

/// One piece of the layout around and inside an image.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Text tokenized as template text (special tokens parsed).
    Text(&'static str),
    /// The vocabulary entry whose text this is (libmtmd's `lookup_token`).
    Token(String),
    /// The embeddings of the image's encoder input `i`, an `nx` x `ny` grid.
    Rows { input: usize, nx: usize, ny: usize },
}

/// How one image enters the prompt, as libmtmd lays it out.
fn layout(c: &VisionConfig, shape: &ImageShape) -> Vec<Piece> {
    let grid = |i: usize| {
        let (w, h) = shape.inputs[i];
        let (nx, ny) = c.grid(w, h);
        Piece::Rows { input: i, nx, ny }
    };
    match (c.projector, shape.tiles) {
        (Projector::Idefics3, Some((gx, gy))) => {
            let fake = || Piece::Token("<fake_token_around_image>".into());
            let mut out = Vec::new();
            for y in 0..gy {
                for x in 0..gx {
                    out.push(fake());
                    out.push(Piece::Token(format!("<row_{}_col_{}>", y + 1, x + 1)));
                    out.push(grid(y * gx + x));
                }
                if y + 1 < gy {
                    out.push(Piece::Token("\n".into()));
                }
            }
            out.extend([
                Piece::Token("\n\n".into()),
                fake(),
                Piece::Token("<global-img>".into()),
                grid(gx * gy),
                fake(),
            ]);
            out
        }
        _ => vec![
            Piece::Text("<|vision_start|>"),
            grid(0),
            Piece::Text("<|vision_end|>"),
        ],
    }
}

/// A decoded image with what the tower will make of it.
pub struct PreparedImage {
    pub prepared: Prepared,
    /// Content hash of the decoded pixels: the prefix cache's key for its rows.
    pub hash: u64,
}

impl PreparedImage {
    pub fn new(img: &Rgb, c: &VisionConfig) -> Self {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (img.width, img.height, &img.data).hash(&mut h);
        Self {
            prepared: preprocess::prepare(img, c),
            hash: h.finish(),
        }
    }
}

/// A sequence's images in the batch scheduler: where their rows go, and what the tower
/// encodes them from (once the scheduler admits the sequence and its cached prefix does
/// not already hold them).
pub struct SeqImages {
    pub spans: ImageSpans,
    pub images: Vec<PreparedImage>,
}

impl SeqImages {
    /// The prefix-cache key of row `j` holding `token`: image rows are keyed by their
    /// image's content hash and their place in it, so a resent image finds its blocks.
    pub fn cache_key(&self, j: usize, token: u32) -> u32 {
        use std::hash::{Hash, Hasher};
        match self.spans.run_at(j) {
            None => token,
            Some(r) => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (self.images[r.image].hash, r.part, j - r.at).hash(&mut h);
                h.finish() as u32
            }
        }
    }

    /// Checks that the runs fit a prompt of `len` rows, in order, and match the images'
    /// preprocessed sizes.
    pub fn check(&self, len: usize, c: &VisionConfig) -> Result<(), EngineError> {
        let bad = |what: String| EngineError::Tokenizer(format!("image layout: {what}"));
        let mut end = 0;
        for r in &self.spans.runs {
            let img = self.images.get(r.image).ok_or_else(|| {
                bad(format!(
                    "run names image {} of {}",
                    r.image,
                    self.images.len()
                ))
            })?;
            let input = img
                .prepared
                .inputs
                .get(r.part)
                .ok_or_else(|| bad(format!("image {} has no input {}", r.image, r.part)))?;
            let grid = c.grid(input.width, input.height);
            if r.at < end || r.end() > len || grid != (r.nx, r.ny) {
                return Err(bad(format!(
                    "run at {} ({}x{}) does not fit (image grid {}x{}, prompt {len})",
                    r.at, r.nx, r.ny, grid.0, grid.1
                )));
            }
            end = r.end();
        }
        Ok(())
    }
}

/// A prompt of text and images: tokens (placeholders at image rows) and the image runs.
#[derive(Debug, Clone, Default)]
pub struct MultimodalPrompt {
    pub tokens: Vec<u32>,
    pub spans: ImageSpans,
}

/// [`VisionTower::prompt`] from the tower's configuration alone (what a front has).
pub fn prompt(
    c: &VisionConfig,
    tok: &Tokenizer,
    segments: &[&str],
    shapes: &[ImageShape],
) -> Result<MultimodalPrompt, EngineError> {
    if segments.len() != shapes.len() + 1 {
        return Err(EngineError::Tokenizer(format!(
            "{} image markers for {} images",
            segments.len().saturating_sub(1),
            shapes.len()
        )));
    }
    let mut p = MultimodalPrompt {
        tokens: Vec::new(),
        spans: ImageSpans {
            runs: Vec::new(),
            mrope: c.mrope(),
        },
    };
    for (i, seg) in segments.iter().enumerate() {
        p.tokens.extend(tok.encode_chat_part(seg, i == 0)?);
        let Some(shape) = shapes.get(i) else { break };
        for piece in layout(c, shape) {
            match piece {
                Piece::Text(t) => p.tokens.extend(tok.encode_chat_part(t, false)?),
                Piece::Token(t) => p.tokens.push(tok.id_of_piece(&t).ok_or_else(|| {
                    EngineError::Tokenizer(format!("no {t:?} token in the vocabulary"))
                })?),
                Piece::Rows { input, nx, ny } => {
                    p.spans.runs.push(ImageRun {
                        at: p.tokens.len(),
                        nx,
                        ny,
                        image: i,
                        part: input,
                        rows: None,
                    });
                    p.tokens.extend(std::iter::repeat_n(PLACEHOLDER, nx * ny));
                }
            }
        }
    }
    Ok(p)
}

impl VisionTower {
    /// Checks that `tok`'s vocabulary has every token this tower's layout looks up.
    pub fn check_vocabulary(&self, tok: &Tokenizer) -> Result<(), EngineError> {
        if self.config.projector != Projector::Idefics3 {
            return Ok(());
        }
        let needed = ["<fake_token_around_image>", "<global-img>", "\n", "\n\n"];
        for t in needed
            .iter()
            .map(|s| s.to_string())
            .chain((1..=6).flat_map(|r| (1..=6).map(move |c| format!("<row_{r}_col_{c}>"))))
        {
            if tok.id_of_piece(&t).is_none() {
                return Err(EngineError::BadModel(format!(
                    "the language model's vocabulary has no {t:?} token, which {} images need",
                    self.config.projector.name()
                )));
            }
        }
        Ok(())
    }

    /// Lays out `segments` (the prompt text cut at each image marker) around images of
    /// the given shapes and tokenizes the text as libmtmd does: each piece on its own,
    /// special tokens parsed, BOS (if the model adds one) before the first. The image runs
    /// are not encoded.
    pub fn prompt(
        &self,
        tok: &Tokenizer,
        segments: &[&str],
        shapes: &[ImageShape],
    ) -> Result<MultimodalPrompt, EngineError> {
        prompt(&self.config, tok, segments, shapes)
    }

    /// Encodes image `i` of `images` and stores its rows in `prompt`'s runs.
    pub fn encode_into(
        &self,
        be: &dyn crate::engine::Backend,
        images: &[PreparedImage],
        i: usize,
        spans: &mut ImageSpans,
    ) {
        for run in spans.runs.iter_mut().filter(|r| r.image == i) {
            let enc = self.encode(be, &images[i].prepared.inputs[run.part]);
            debug_assert_eq!((enc.nx, enc.ny), (run.nx, run.ny));
            run.rows = Some(Arc::from(enc.rows));
        }
    }
}
