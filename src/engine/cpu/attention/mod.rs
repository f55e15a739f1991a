//! Causal attention over the KV cache with an online softmax, one (token, head) pair per
//! unit of work.
//!
//! Two arithmetic modes mirror llama.cpp's CPU flash attention so that outputs match it:
//! batches of fewer than [`TILE_Q`] query rows (decode and short prompts) round the query to
//! f16 and accumulate the weighted values in f16; larger batches keep everything in f32.

use half::f16;

use crate::engine::backend::AttentionShape;
use crate::engine::kv_cache::LayerKv;

use super::pool::ThreadPool;
use super::OutPtr;

#[cfg(target_arch = "x86_64")]
mod f16c;

/// Query rows from which llama.cpp switches to its tiled all-f32 kernel.
pub const TILE_Q: usize = 64;

/// Rounds to f16 precision (round to nearest even), without per-call feature detection.
#[inline(always)]
fn r16(x: f32) -> f32 {
    f16::from_f32_const(x).to_f32_const()
}

/// `k · q` as ggml's AVX-512 `ggml_vec_dot_f16` computes it: four 16-lane accumulators
/// over 64-element steps, folded (0+2, 1+3, 0+1), then GCC's `_mm512_reduce_add_ps` order;
/// elements past the last full step are added in f64.
#[inline(always)]
fn dot_f16_order(k: &[f32], q: &[f32]) -> f32 {
    let np = k.len() / 64 * 64;
    let mut acc = [[0.0f32; 16]; 4];
    for i in (0..np).step_by(64) {
        for (j, a) in acc.iter_mut().enumerate() {
            for (l, a) in a.iter_mut().enumerate() {
                let e = i + 16 * j + l;
                *a = k[e].mul_add(q[e], *a);
            }
        }
    }
    let mut v = [0.0f32; 16];
    for l in 0..16 {
        v[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let t3: [f32; 8] = std::array::from_fn(|i| v[i + 8] + v[i]);
    let t6: [f32; 4] = std::array::from_fn(|i| t3[i + 4] + t3[i]);
    let mut sum = ((t6[0] + t6[2]) + (t6[1] + t6[3])) as f64;
    for e in np..k.len() {
        sum += (k[e] * q[e]) as f64;
    }
    sum as f32
}

/// Which cache rows one query row attends to, and in which arithmetic mode.
pub(crate) struct Query {
    kv_head: usize,
    n_ctx: usize,
    half_mode: bool,
}

/// Per-thread buffers: the (rounded) query and the value accumulator.
pub(crate) struct Scratch {
    qh: Vec<f32>,
    acc: Vec<f32>,
}

/// One query row of one head against the cache rows `0..n_ctx`.
#[inline(always)]
fn attend_body(q_row: &[f32], kv: &LayerKv, s: &AttentionShape, q: &Query, scratch: &mut Scratch, out: &mut [f32]) {
    let Query { kv_head: kvh, n_ctx, half_mode } = *q;
    let Scratch { qh, acc } = scratch;
    let (dk, dv) = (s.head_dim_k, s.head_dim_v);
    let (kv_k, kv_v) = (s.n_head_kv * dk, s.n_head_kv * dv);
    let scale = 1.0 / (dk as f32).sqrt();
    for (d, &v) in qh.iter_mut().zip(q_row) {
        *d = if half_mode { r16(v) } else { v };
    }
    acc.fill(0.0);
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0.0f32);
    for ic in 0..n_ctx {
        let k = &kv.k[ic * kv_k + kvh * dk..][..dk];
        let v = &kv.v[ic * kv_v + kvh * dv..][..dv];
        let sc = if half_mode { dot_f16_order(k, qh) } else { k.iter().zip(qh.iter()).map(|(a, b)| a * b).sum::<f32>() } * scale;
        let (mut ms, mut vs) = (1.0f32, 1.0f32);
        if sc > m {
            ms = (m - sc).exp();
            m = sc;
            if half_mode {
                acc.iter_mut().for_each(|a| *a = r16(*a * ms));
            } else {
                acc.iter_mut().for_each(|a| *a *= ms);
            }
        } else {
            vs = (sc - m).exp();
        }
        if half_mode {
            acc.iter_mut().zip(v).for_each(|(a, &x)| *a = r16(x.mul_add(vs, *a)));
        } else {
            acc.iter_mut().zip(v).for_each(|(a, &x)| *a = x.mul_add(vs, *a));
        }
        sum = sum.mul_add(ms, vs);
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    out.iter_mut().zip(acc.iter()).for_each(|(o, a)| *o = a * inv);
}

super::ops::fma_dispatch!(fn attend_generic(q_row: &[f32], kv: &LayerKv, s: &AttentionShape, q: &Query, scratch: &mut Scratch, out: &mut [f32]) => attend_body);

/// [`attend_body`], through the F16C path where it applies.
fn attend(q_row: &[f32], kv: &LayerKv, s: &AttentionShape, q: &Query, scratch: &mut Scratch, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if q.half_mode && f16c::applies(s.head_dim_k, s.head_dim_v) && super::ops::fma_available() {
        let (dk, dv) = (s.head_dim_k, s.head_dim_v);
        let Scratch { qh, acc } = scratch;
        for (d, &v) in qh.iter_mut().zip(q_row) {
            *d = r16(v);
        }
        let (k, v) = (&kv.k[q.kv_head * dk..], &kv.v[q.kv_head * dv..]);
        let (k_row, v_row) = (s.n_head_kv * dk, s.n_head_kv * dv);
        assert!(k.len() >= (q.n_ctx - 1) * k_row + dk && v.len() >= (q.n_ctx - 1) * v_row + dv);
        let scale = 1.0 / (dk as f32).sqrt();
        // SAFETY: the features were detected, the shape checked by `applies`, and the cache
        // bounds just above.
        let sum = unsafe { f16c::attend(qh, k.as_ptr(), k_row, v.as_ptr(), v_row, q.n_ctx, scale, acc) };
        let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
        out.iter_mut().zip(acc.iter()).for_each(|(o, a)| *o = a * inv);
        return;
    }
    attend_generic(q_row, kv, s, q, scratch, out);
}

pub fn attention(pool: &ThreadPool, q: &[f32], kv: &LayerKv, s: AttentionShape, out: &mut [f32]) {
    let (dk, dv) = (s.head_dim_k, s.head_dim_v);
    let group = s.n_head / s.n_head_kv;
    let half_mode = s.n_tokens < TILE_Q;
    let out_ptr = OutPtr(out.as_mut_ptr());
    let units = s.n_tokens * s.n_head;
    pool.for_chunks(units, 1.max(units / 64), &|range| {
        let mut scratch = Scratch { qh: vec![0.0f32; dk], acc: vec![0.0f32; dv] };
        for u in range {
            let (t, h) = (u / s.n_head, u % s.n_head);
            let q_row = &q[(t * s.n_head + h) * dk..][..dk];
            // SAFETY: unit u owns output row slice (t, h).
            let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add((t * s.n_head + h) * dv), dv) };
            let query = Query { kv_head: h / group, n_ctx: s.start + t + 1, half_mode };
            attend(q_row, kv, &s, &query, &mut scratch, o);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-2, 2), rounded to f16 as the cache stores them.
    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| r16((((i * 7919 + seed * 104_729) % 4001) as f32 / 1000.0) - 2.0)).collect()
    }

    #[test]
    fn the_f16c_path_equals_the_generic_one_bit_for_bit() {
        let s = AttentionShape { n_head: 6, n_head_kv: 2, head_dim_k: 64, head_dim_v: 64, start: 0, n_tokens: 1 };
        let n_ctx = 77;
        let kv = LayerKv { k: values(n_ctx * 128, 1), v: values(n_ctx * 128, 2) };
        let q_row = values(64, 3);
        for kv_head in 0..2 {
            let query = Query { kv_head, n_ctx, half_mode: true };
            let mut scratch = Scratch { qh: vec![0.0; 64], acc: vec![0.0; 64] };
            let (mut fast, mut generic) = (vec![0.0f32; 64], vec![0.0f32; 64]);
            attend(&q_row, &kv, &s, &query, &mut scratch, &mut fast);
            attend_generic(&q_row, &kv, &s, &query, &mut scratch, &mut generic);
            assert!(fast.iter().zip(&generic).all(|(a, b)| a.to_bits() == b.to_bits()), "kv head {kv_head}");
        }
    }
}
