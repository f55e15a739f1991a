//! The f16 mode of attention (llama.cpp's `flash_attn_ext_f16_one_chunk` with an F16 cache):
//! the query is rounded to f16, scores use `ggml_vec_dot_f16`'s AVX-512 reduction order, and
//! the value accumulator is rounded to f16 after every update. One unit of work is one
//! (query row, head) pair.

use std::ops::Range;

use half::f16;

use crate::engine::backend::{AttentionShape, SeqAttention};
use crate::engine::cpu::pool::ThreadPool;
use crate::engine::cpu::OutPtr;
use crate::engine::kv::KvView;

/// llama.cpp splits the cache of a one-token query among its threads once the cache view
/// (the used length padded to [`KV_PAD`]) reaches [`SPLIT_FROM`] positions, and merges the
/// partial results. The reference outputs were made with two threads, so we always split
/// in two, whatever our own thread count: results never depend on our threads.
const SPLIT_PARTS: usize = 2;
const SPLIT_FROM: usize = 512;
const KV_PAD: usize = 256;

/// Rounds to f16 precision (round to nearest even), without per-call feature detection.
#[inline(always)]
pub(super) fn r16(x: f32) -> f32 {
    f16::from_f32_const(x).to_f32_const()
}

/// `k · q` as ggml's AVX-512 `ggml_vec_dot_f16` computes it: four 16-lane accumulators
/// over 64-element steps, folded (0+2, 1+3, 0+1), then GCC's `_mm512_reduce_add_ps` order;
/// elements past the last full step are added in f64.
#[inline(always)]
fn dot_f16_order(k: &[f32], q: &[f32]) -> f32 {
    use crate::engine::cpu::ops::{accumulate_64, fold_reduce};
    let np = k.len() / 64 * 64;
    let mut sum = fold_reduce(&accumulate_64(k, q)) as f64;
    for e in np..k.len() {
        sum += (k[e] * q[e]) as f64;
    }
    sum as f32
}

/// Per-thread buffers: the rounded query, the (unnormalised) value accumulator, and the
/// merged result of a split row.
pub(super) struct Scratch {
    qh: Vec<f32>,
    acc: Vec<f32>,
    merged: Vec<f32>,
}

impl Scratch {
    fn new(s: &AttentionShape) -> Self {
        Self {
            qh: vec![0.0; s.head_dim_k],
            acc: vec![0.0; s.head_dim_v],
            merged: vec![0.0; s.head_dim_v],
        }
    }
}

/// The online softmax over cache positions `range` of KV head `kvh`, for the rounded query
/// in `scratch.qh`, continuing the running maximum and sum in `state` and the accumulator
/// in `scratch.acc`.
#[inline(always)]
fn attend_body(
    kv: &KvView,
    s: &AttentionShape,
    kvh: usize,
    range: Range<usize>,
    scratch: &mut Scratch,
    state: &mut (f32, f32),
) {
    let Scratch { qh, acc, .. } = scratch;
    let (dk, dv) = (s.head_dim_k, s.head_dim_v);
    let scale = 1.0 / (dk as f32).sqrt();
    let (mut m, mut sum) = *state;
    for ic in range {
        let k = &kv.k_row(ic)[kvh * dk..][..dk];
        let v = &kv.v_row(ic)[kvh * dv..][..dv];
        let sc = dot_f16_order(k, qh) * scale;
        let (mut ms, mut vs) = (1.0f32, 1.0f32);
        if sc > m {
            ms = (m - sc).exp();
            m = sc;
            acc.iter_mut().for_each(|a| *a = r16(*a * ms));
        } else {
            vs = (sc - m).exp();
        }
        acc.iter_mut()
            .zip(v)
            .for_each(|(a, &x)| *a = r16(x.mul_add(vs, *a)));
        sum = sum.mul_add(ms, vs);
    }
    *state = (m, sum);
}

crate::engine::cpu::ops::fma_dispatch!(fn attend_generic(kv: &KvView, s: &AttentionShape, kvh: usize, range: Range<usize>, scratch: &mut Scratch, state: &mut (f32, f32)) => attend_body);

/// [`attend_body`] for query row `q_row` from a fresh state, through the F16C path where it
/// applies (block by block: the state carries over, so the arithmetic is one chain).
/// Returns the maximum and the sum; the accumulator is left in `scratch.acc`.
fn attend(
    q_row: &[f32],
    kv: &KvView,
    s: &AttentionShape,
    kvh: usize,
    range: Range<usize>,
    scratch: &mut Scratch,
) -> (f32, f32) {
    for (d, &v) in scratch.qh.iter_mut().zip(q_row) {
        *d = r16(v);
    }
    scratch.acc.fill(0.0);
    let mut state = (f32::NEG_INFINITY, 0.0f32);
    #[cfg(target_arch = "x86_64")]
    if super::f16c::applies(s.head_dim_k, s.head_dim_v) && crate::engine::cpu::ops::fma_available()
    {
        let (dk, dv) = (s.head_dim_k, s.head_dim_v);
        for (k, v) in kv.runs(range) {
            let n = k.len() / kv.dim_k;
            let (k, v) = (&k[kvh * dk..], &v[kvh * dv..]);
            assert!(k.len() >= (n - 1) * kv.dim_k + dk && v.len() >= (n - 1) * kv.dim_v + dv);
            // SAFETY: the features were detected, the shape checked by `applies`, and the
            // run's bounds just above.
            unsafe {
                super::f16c::attend(
                    &scratch.qh,
                    k.as_ptr(),
                    kv.dim_k,
                    v.as_ptr(),
                    kv.dim_v,
                    n,
                    &mut scratch.acc,
                    &mut state,
                )
            };
        }
        return state;
    }
    attend_generic(kv, s, kvh, range, scratch, &mut state);
    state
}

/// `acc / sum` into `out` (zero when the sum is zero).
fn normalise(acc: &[f32], sum: f32, out: &mut [f32]) {
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    out.iter_mut().zip(acc).for_each(|(o, a)| *o = a * inv);
}

/// Whether llama.cpp computes a one-token query at position `pos` in parts.
fn splits(pos: usize) -> bool {
    (pos + 1).div_ceil(KV_PAD) * KV_PAD >= SPLIT_FROM
}

/// One query row of head `h` at position `pos` over cache positions `0..=pos`, into `out`.
/// With `split` (a one-token query over a long cache view), the view is computed in
/// [`SPLIT_PARTS`] equal parts merged in order, as `ggml_flash_attn_ext_reduce_partials`
/// merges them (with GCC's fused multiply-adds).
#[allow(clippy::too_many_arguments)]
fn row(
    q_row: &[f32],
    kv: &KvView,
    s: &AttentionShape,
    kvh: usize,
    pos: usize,
    split: bool,
    scratch: &mut Scratch,
    out: &mut [f32],
) {
    let n_ctx = s.last_visible(pos) + 1;
    if !split {
        let (_, sum) = attend(q_row, kv, s, kvh, 0..n_ctx, scratch);
        return normalise(&scratch.acc, sum, out);
    }
    let part = n_ctx.div_ceil(KV_PAD) * KV_PAD / SPLIT_PARTS;
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0.0f32);
    scratch.merged.fill(0.0);
    for p in 0..SPLIT_PARTS {
        let rows = (p * part).min(n_ctx)..((p + 1) * part).min(n_ctx);
        let (pm, ps) = attend(q_row, kv, s, kvh, rows, scratch);
        if ps == 0.0 {
            continue;
        }
        let new_m = m.max(pm);
        let (old_scale, new_scale) = ((m - new_m).exp(), (pm - new_m).exp());
        for (a, &x) in scratch.merged.iter_mut().zip(&scratch.acc) {
            *a = a.mul_add(old_scale, x * new_scale);
        }
        sum = sum.mul_add(old_scale, ps * new_scale);
        m = new_m;
    }
    if sum == 0.0 {
        out.copy_from_slice(&scratch.merged);
    } else {
        normalise(&scratch.merged, sum, out);
    }
}

/// Attention for every row of every sequence, one unit per (row, head). Each row is
/// computed as llama.cpp computes it in a batch of its sequence's size, or, with
/// `per_row_split`, as llama.cpp computes it as a one-token decode step: then a row's result
/// depends on nothing but its own query and cache (the batch-invariant arithmetic).
pub(super) fn attention(
    pool: &ThreadPool,
    q: &[f32],
    seqs: &[SeqAttention],
    per_row_split: bool,
    out: &mut [f32],
) {
    let Some(first) = seqs.first() else { return };
    let s = first.shape;
    let (dk, dv) = (s.head_dim_k, s.head_dim_v);
    let group = s.n_head / s.n_head_kv;
    // (sequence, position, split) of every query row, in order.
    let rows: Vec<(usize, usize, bool)> = seqs
        .iter()
        .enumerate()
        .flat_map(|(i, sq)| {
            let one = sq.shape.n_tokens == 1;
            (sq.shape.start..sq.shape.start + sq.shape.n_tokens)
                .map(move |p| (i, p, (per_row_split || one) && splits(p)))
        })
        .collect();
    let out_ptr = OutPtr(out.as_mut_ptr());
    let units = rows.len() * s.n_head;
    pool.for_chunks(units, 1.max(units / 64), &|range| {
        let mut scratch = Scratch::new(&s);
        for u in range {
            let (r, h) = (u / s.n_head, u % s.n_head);
            let (i, pos, split) = rows[r];
            let q_row = &q[(r * s.n_head + h) * dk..][..dk];
            // SAFETY: unit u owns output row slice (r, h).
            let o = unsafe {
                std::slice::from_raw_parts_mut(out_ptr.get().add((r * s.n_head + h) * dv), dv)
            };
            row(
                q_row,
                &seqs[i].kv,
                &s,
                h / group,
                pos,
                split,
                &mut scratch,
                o,
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kv::BLOCK;

    /// Deterministic values in [-2, 2), rounded to f16 as the cache stores them.
    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| r16((((i * 7919 + seed * 104_729) % 4001) as f32 / 1000.0) - 2.0))
            .collect()
    }

    #[test]
    fn the_f16c_path_equals_the_generic_one_bit_for_bit_across_blocks() {
        let s = AttentionShape {
            n_head: 6,
            n_head_kv: 2,
            head_dim_k: 64,
            head_dim_v: 64,
            start: 0,
            n_tokens: 1,
            causal: true,
        };
        let n_ctx = 77;
        let blocks = [3, 0, 4, 1, 2];
        let (k, v) = (
            values(blocks.len() * BLOCK * 128, 1),
            values(blocks.len() * BLOCK * 128, 2),
        );
        let kv = KvView {
            k: &k,
            v: &v,
            blocks: &blocks,
            dim_k: 128,
            dim_v: 128,
        };
        let q_row = values(64, 3);
        for kvh in 0..2 {
            for range in [0..n_ctx, 13..n_ctx, 20..20] {
                let mut scratch = Scratch::new(&s);
                let fast = attend(&q_row, &kv, &s, kvh, range.clone(), &mut scratch);
                let fast_acc = scratch.acc.clone();
                scratch.acc.fill(0.0);
                let mut generic = (f32::NEG_INFINITY, 0.0);
                attend_generic(&kv, &s, kvh, range, &mut scratch, &mut generic);
                assert_eq!(
                    (fast.0.to_bits(), fast.1.to_bits()),
                    (generic.0.to_bits(), generic.1.to_bits())
                );
                assert!(
                    fast_acc
                        .iter()
                        .zip(&scratch.acc)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "kv head {kvh}"
                );
            }
        }
    }
}
