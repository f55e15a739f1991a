//! Causal attention over the KV cache with an online softmax.
//!
//! Three arithmetic modes mirror llama.cpp's CPU flash attention (as the reference outputs
//! were made: `-t 2`, F16 cache), so that outputs match it bit for bit:
//! - batches of fewer than [`TILE_Q`] query rows (decode and short prompts): [`half`], with
//!   the query rounded to f16 and the weighted values accumulated in f16;
//! - the same for a one-token batch over a cache view of 512 or more positions, computed
//!   in two halves whose partial results are merged ([`half`] again);
//! - batches of [`TILE_Q`] rows or more: the all-f32 tiled algorithm of [`tiled`].

use crate::engine::backend::AttentionShape;
use crate::engine::kv_cache::LayerKv;

use super::pool::ThreadPool;

#[cfg(target_arch = "x86_64")]
mod f16c;
mod half;
mod tiled;

/// Query rows from which llama.cpp switches to its tiled all-f32 kernel.
pub const TILE_Q: usize = 64;

pub fn attention(pool: &ThreadPool, q: &[f32], kv: &LayerKv, s: AttentionShape, out: &mut [f32]) {
    if s.n_tokens >= TILE_Q {
        tiled::attention(pool, q, kv, s, out);
    } else {
        half::attention(pool, q, kv, s, out);
    }
}
