//! The all-f32 mode for batches of [`super::TILE_Q`] or more query rows, as llama.cpp's
//! tiled flash attention (`ggml_compute_forward_flash_attn_ext_tiled`) computes it.
//!
//! The cache is walked in tiles of [`TILE_KV`] positions. Per query row and tile: scores
//! are fused multiply-add chains over the key width, scaled, with masked and padded
//! positions at minus infinity; the running maximum moves once per tile (rescaling by libm's
//! `expf`); the probabilities use ggml's vector `expf` and are summed 16 at a time in f64;
//! the values are accumulated as one fused chain over the tile's positions. A unit of work
//! is one head and up to 64 consecutive query rows, which share one transposed key tile.

use std::ops::Range;

use crate::engine::backend::AttentionShape;
use crate::engine::cpu::ops::{ggml_expf, reduce_add_16};
use crate::engine::cpu::pool::ThreadPool;
use crate::engine::cpu::OutPtr;
use crate::engine::kv::KvView;

use super::TILE_Q;

/// Cache positions per tile.
pub const TILE_KV: usize = 64;

/// Per-thread buffers for one unit.
pub(super) struct TileScratch {
    /// The key tile, transposed: `kt[d * TILE_KV + j]`.
    kt: Vec<f32>,
    acc: Vec<f32>,
    max: Vec<f32>,
    sum: Vec<f32>,
}

impl TileScratch {
    fn new(s: &AttentionShape, rows: usize) -> Self {
        Self {
            kt: vec![0.0; s.head_dim_k * TILE_KV],
            acc: vec![0.0; rows * s.head_dim_v],
            max: vec![0.0; rows],
            sum: vec![0.0; rows],
        }
    }
}

/// Head `h`, query rows `tokens` (at most 64) of `q`, written into `out`, which holds those
/// rows' `head_dim_v`-wide outputs one after the other.
#[inline(always)]
fn unit_body(
    q: &[f32],
    kv: &KvView,
    s: &AttentionShape,
    h: usize,
    tokens: Range<usize>,
    scratch: &mut TileScratch,
    out: &mut [f32],
) {
    let (t0, t1) = (tokens.start, tokens.end);
    let (dk, dv) = (s.head_dim_k, s.head_dim_v);
    let kvh = h / (s.n_head / s.n_head_kv);
    let scale = 1.0 / (dk as f32).sqrt();
    let rows = t1 - t0;
    let TileScratch { kt, acc, max, sum } = scratch;
    acc[..rows * dv].fill(0.0);
    max[..rows].fill(f32::NEG_INFINITY);
    sum[..rows].fill(0.0);
    let n_ctx = s.last_visible(s.start + t1 - 1) + 1;
    for ic in (0..n_ctx).step_by(TILE_KV) {
        let kv_tile = TILE_KV.min(n_ctx - ic);
        for j in 0..kv_tile {
            let k = &kv.k_row(ic + j)[kvh * dk..][..dk];
            for (d, &x) in k.iter().enumerate() {
                kt[d * TILE_KV + j] = x;
            }
        }
        for r in 0..rows {
            let pos = s.last_visible(s.start + t0 + r);
            if ic > pos {
                continue; // the whole tile is masked for this row: llama.cpp skips it
            }
            let valid = kv_tile.min(pos + 1 - ic);
            let q_row = &q[((t0 + r) * s.n_head + h) * dk..][..dk];
            let mut sc = [0.0f32; TILE_KV];
            for (d, &qd) in q_row.iter().enumerate() {
                let k_d = &kt[d * TILE_KV..][..TILE_KV];
                for (a, &k) in sc.iter_mut().zip(k_d) {
                    *a = qd.mul_add(k, *a);
                }
            }
            for (j, a) in sc.iter_mut().enumerate() {
                *a = if j < valid {
                    *a * scale
                } else {
                    f32::NEG_INFINITY
                };
            }
            let tile_max = sc.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            if tile_max == f32::NEG_INFINITY {
                continue;
            }
            let acc_row = &mut acc[r * dv..(r + 1) * dv];
            let new_max = max[r].max(tile_max);
            if new_max > max[r] {
                let ms = (max[r] - new_max).exp();
                acc_row.iter_mut().for_each(|a| *a *= ms);
                sum[r] *= ms;
            }
            max[r] = new_max;
            let p: [f32; TILE_KV] = std::array::from_fn(|j| ggml_expf(sc[j] - new_max));
            let tile_sum: f64 = p.chunks_exact(16).map(|c| reduce_add_16(c) as f64).sum();
            sum[r] = (sum[r] as f64 + tile_sum) as f32;
            for (j, &pj) in p.iter().enumerate().take(valid) {
                let v = &kv.v_row(ic + j)[kvh * dv..][..dv];
                for (a, &x) in acc_row.iter_mut().zip(v) {
                    *a = pj.mul_add(x, *a);
                }
            }
        }
    }
    for r in 0..rows {
        let inv = if sum[r] == 0.0 { 0.0 } else { 1.0 / sum[r] };
        for (o, &a) in out[r * dv..(r + 1) * dv].iter_mut().zip(&acc[r * dv..]) {
            *o = a * inv;
        }
    }
}

crate::engine::cpu::ops::fma_dispatch!(fn unit(q: &[f32], kv: &KvView, s: &AttentionShape, h: usize, tokens: Range<usize>, scratch: &mut TileScratch, out: &mut [f32]) => unit_body);

/// One unit per head and block of up to [`TILE_Q`] consecutive tokens.
pub(super) fn attention(
    pool: &ThreadPool,
    q: &[f32],
    kv: &KvView,
    s: AttentionShape,
    out: &mut [f32],
) {
    let dv = s.head_dim_v;
    let blocks = s.n_tokens.div_ceil(TILE_Q);
    let out_ptr = OutPtr(out.as_mut_ptr());
    let units = s.n_head * blocks;
    pool.for_chunks(units, 1, &|range| {
        let mut scratch = TileScratch::new(&s, TILE_Q);
        let mut res = vec![0.0f32; TILE_Q * dv];
        for u in range {
            // Later blocks attend to more of the cache: hand them out first.
            let (b, h) = (blocks - 1 - u / s.n_head, u % s.n_head);
            let (t0, t1) = (b * TILE_Q, ((b + 1) * TILE_Q).min(s.n_tokens));
            unit(q, kv, &s, h, t0..t1, &mut scratch, &mut res);
            for (r, row) in res.chunks_exact(dv).take(t1 - t0).enumerate() {
                // SAFETY: unit (b, h) owns the output rows (t0..t1, h).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        row.as_ptr(),
                        out_ptr.get().add(((t0 + r) * s.n_head + h) * dv),
                        dv,
                    )
                };
            }
        }
    });
}
