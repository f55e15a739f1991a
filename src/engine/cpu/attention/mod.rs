//! Causal attention over the KV cache with an online softmax.
//!
//! Three arithmetic modes mirror llama.cpp's CPU flash attention (as the reference outputs
//! were made: `-t 2`, F16 cache), so that outputs match it bit for bit:
//! - batches of fewer than [`TILE_Q`] query rows (decode and short prompts): [`half`], with
//!   the query rounded to f16 and the weighted values accumulated in f16;
//! - the same for a one-token batch over a cache view of 512 or more positions, computed
//!   in two halves whose partial results are merged ([`half`] again);
//! - batches of [`TILE_Q`] rows or more: the all-f32 tiled algorithm of [`tiled`].
//!
//! The batch scheduler instead computes every row the one-token way ([`Arithmetic`]), so a
//! row's result depends only on its own query and cache, never on its batch.

use crate::engine::backend::{Arithmetic, SeqAttention};

use super::pool::ThreadPool;

#[cfg(target_arch = "x86_64")]
mod f16c;
mod half;
mod tiled;

/// Query rows from which llama.cpp switches to its tiled all-f32 kernel.
pub const TILE_Q: usize = 64;

/// In [`Arithmetic::Llama`] a call holds one sequence, computed as llama.cpp computes a
/// batch of its size; in [`Arithmetic::Invariant`] every row of every sequence is computed
/// as llama.cpp computes a one-token decode step.
pub fn attention(
    pool: &ThreadPool,
    q: &[f32],
    seqs: &[SeqAttention],
    arith: Arithmetic,
    out: &mut [f32],
) {
    match (arith, seqs) {
        (Arithmetic::Llama, [one]) if one.shape.n_tokens >= TILE_Q => {
            tiled::attention(pool, q, &one.kv, one.shape, out)
        }
        (Arithmetic::Llama, [_]) => half::attention(pool, q, seqs, false, out),
        (Arithmetic::Llama, _) => panic!(
            "llama.cpp's arithmetic is defined for one sequence per call, not {}",
            seqs.len()
        ),
        (Arithmetic::Invariant, _) => half::attention(pool, q, seqs, true, out),
    }
}
