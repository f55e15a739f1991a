//! Where a sequence's image embeddings sit among its tokens, and the rotary positions that
//! follow from them.
//!
//! An image enters the language model as runs of embedding rows in place of tokens (the
//! sequence holds a placeholder token at each of those rows, so token-based bookkeeping
//! stays as it is). Positions are llama.cpp's (`mtmd_image_tokens_get_decoder_pos`): with
//! M-RoPE a run of an `nx` x `ny` grid takes time position `p0` and height/width positions
//! `p0 + row`, `p0 + col`, and the text after it continues from `p0 + max(nx, ny)`, so a
//! row's position is its index less what earlier runs saved; otherwise rows are positioned
//! like text.

use std::sync::Arc;

use crate::engine::model::config::{text_pos, RopePos};

/// One run of image embedding rows.
#[derive(Debug, Clone)]
pub struct ImageRun {
    /// Index of the run's first row in the sequence.
    pub at: usize,
    /// The run's grid of rows (`nx * ny` rows, row-major).
    pub nx: usize,
    pub ny: usize,
    /// The image this run belongs to (several runs when an image is cut into tiles) and
    /// which of its runs this is.
    pub image: usize,
    pub part: usize,
    /// The embeddings, `nx * ny` rows of the model's width, once encoded.
    pub rows: Option<Arc<[f32]>>,
}

impl ImageRun {
    pub fn len(&self) -> usize {
        self.nx * self.ny
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn end(&self) -> usize {
        self.at + self.len()
    }

    /// Positions the run advances the sequence by.
    fn n_pos(&self, mrope: bool) -> usize {
        if mrope {
            self.nx.max(self.ny)
        } else {
            self.len()
        }
    }
}

/// A sequence's image runs, in order, and how they are positioned.
#[derive(Debug, Clone, Default)]
pub struct ImageSpans {
    pub runs: Vec<ImageRun>,
    /// Multi-section RoPE (Qwen-VL style 2-D positions for image rows).
    pub mrope: bool,
}

impl ImageSpans {
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The run holding row `j`, if any.
    pub fn run_at(&self, j: usize) -> Option<&ImageRun> {
        let i = self.runs.partition_point(|r| r.end() <= j);
        self.runs.get(i).filter(|r| r.at <= j)
    }

    /// The embedding of row `j` if it is an encoded image row (`n_embd` wide).
    pub fn embedding(&self, j: usize, n_embd: usize) -> Option<&[f32]> {
        let r = self.run_at(j)?;
        let rows = r.rows.as_deref()?;
        Some(&rows[(j - r.at) * n_embd..][..n_embd])
    }

    /// The rotary position of row `j`.
    pub fn pos(&self, j: usize) -> RopePos {
        let mut saved = 0;
        for r in &self.runs {
            if j < r.at {
                break;
            }
            let p0 = (r.at - saved) as u32;
            if j < r.end() {
                let i = j - r.at;
                return if self.mrope {
                    [p0, p0 + (i / r.nx) as u32, p0 + (i % r.nx) as u32, 0]
                } else {
                    text_pos(j - saved)
                };
            }
            saved += r.len() - r.n_pos(self.mrope);
        }
        text_pos(j - saved)
    }

    /// Runs not (fully) encoded that end after row `from`: what a sequence computed up to
    /// `from` still needs.
    pub fn missing_from(&self, from: usize) -> impl Iterator<Item = &ImageRun> {
        self.runs
            .iter()
            .filter(move |r| r.end() > from && r.rows.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(at: usize, nx: usize, ny: usize) -> ImageRun {
        ImageRun {
            at,
            nx,
            ny,
            image: 0,
            part: 0,
            rows: None,
        }
    }

    #[test]
    fn mrope_positions_follow_llama_cpp() {
        // 3 text rows, a 4x2 image (8 rows, 4 positions), then text.
        let s = ImageSpans {
            runs: vec![run(3, 4, 2)],
            mrope: true,
        };
        assert_eq!(s.pos(2), [2, 2, 2, 0]);
        assert_eq!(s.pos(3), [3, 3, 3, 0]);
        assert_eq!(s.pos(4), [3, 3, 4, 0]);
        assert_eq!(s.pos(7), [3, 4, 3, 0]);
        assert_eq!(s.pos(10), [3, 4, 6, 0]);
        assert_eq!(s.pos(11), [7, 7, 7, 0]);
        let linear = ImageSpans {
            runs: vec![run(3, 4, 2)],
            mrope: false,
        };
        assert_eq!(linear.pos(11), [11, 11, 11, 0]);
        assert_eq!(linear.pos(5), [5, 5, 5, 0]);
    }
}
