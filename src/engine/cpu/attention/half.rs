//! The f16 mode of attention (llama.cpp's `flash_attn_ext_f16_one_chunk` with an F16 cache):
//! the query is rounded to f16, scores use `ggml_vec_dot_f16`'s AVX-512 reduction order, and
//! the value accumulator is rounded to f16 after every update. One unit of work is one
//! (token, head) pair, or for a one-token batch over a long cache, one half of the cache.

use std::ops::Range;

use half::f16;

use crate::engine::backend::AttentionShape;
use crate::engine::cpu::pool::ThreadPool;
use crate::engine::cpu::OutPtr;
use crate::engine::kv_cache::LayerKv;

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

/// Per-thread buffers: the rounded query and the (unnormalised) value accumulator.
pub(super) struct Scratch {
    qh: Vec<f32>,
    acc: Vec<f32>,
}

impl Scratch {
    fn new(s: &AttentionShape) -> Self {
        Self { qh: vec![0.0; s.head_dim_k], acc: vec![0.0; s.head_dim_v] }
    }
}

/// The online softmax over cache rows `range` of KV head `kvh`, for the rounded query in
/// `scratch.qh`. Returns the running maximum and sum; the accumulator is left in
/// `scratch.acc`.
#[inline(always)]
fn attend_body(kv: &LayerKv, s: &AttentionShape, kvh: usize, range: Range<usize>, scratch: &mut Scratch) -> (f32, f32) {
    let Scratch { qh, acc } = scratch;
    let (dk, dv) = (s.head_dim_k, s.head_dim_v);
    let (kv_k, kv_v) = (s.n_head_kv * dk, s.n_head_kv * dv);
    let scale = 1.0 / (dk as f32).sqrt();
    acc.fill(0.0);
    let (mut m, mut sum) = (f32::NEG_INFINITY, 0.0f32);
    for ic in range {
        let k = &kv.k[ic * kv_k + kvh * dk..][..dk];
        let v = &kv.v[ic * kv_v + kvh * dv..][..dv];
        let sc = dot_f16_order(k, qh) * scale;
        let (mut ms, mut vs) = (1.0f32, 1.0f32);
        if sc > m {
            ms = (m - sc).exp();
            m = sc;
            acc.iter_mut().for_each(|a| *a = r16(*a * ms));
        } else {
            vs = (sc - m).exp();
        }
        acc.iter_mut().zip(v).for_each(|(a, &x)| *a = r16(x.mul_add(vs, *a)));
        sum = sum.mul_add(ms, vs);
    }
    (m, sum)
}

crate::engine::cpu::ops::fma_dispatch!(fn attend_generic(kv: &LayerKv, s: &AttentionShape, kvh: usize, range: Range<usize>, scratch: &mut Scratch) -> (f32, f32) => attend_body);

/// [`attend_body`] for query row `q_row`, through the F16C path where it applies.
fn attend(q_row: &[f32], kv: &LayerKv, s: &AttentionShape, kvh: usize, range: Range<usize>, scratch: &mut Scratch) -> (f32, f32) {
    for (d, &v) in scratch.qh.iter_mut().zip(q_row) {
        *d = r16(v);
    }
    #[cfg(target_arch = "x86_64")]
    if super::f16c::applies(s.head_dim_k, s.head_dim_v) && crate::engine::cpu::ops::fma_available() && !range.is_empty() {
        let (dk, dv) = (s.head_dim_k, s.head_dim_v);
        let (k_row, v_row) = (s.n_head_kv * dk, s.n_head_kv * dv);
        let (k, v) = (&kv.k[range.start * k_row + kvh * dk..], &kv.v[range.start * v_row + kvh * dv..]);
        let n = range.len();
        assert!(k.len() >= (n - 1) * k_row + dk && v.len() >= (n - 1) * v_row + dv);
        // SAFETY: the features were detected, the shape checked by `applies`, and the cache
        // bounds just above.
        return unsafe { super::f16c::attend(&scratch.qh, k.as_ptr(), k_row, v.as_ptr(), v_row, n, &mut scratch.acc) };
    }
    attend_generic(kv, s, kvh, range, scratch)
}

/// `acc / sum` into `out` (zero when the sum is zero).
fn normalise(acc: &[f32], sum: f32, out: &mut [f32]) {
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    out.iter_mut().zip(acc).for_each(|(o, a)| *o = a * inv);
}

pub(super) fn attention(pool: &ThreadPool, q: &[f32], kv: &LayerKv, s: AttentionShape, out: &mut [f32]) {
    let (dk, dv) = (s.head_dim_k, s.head_dim_v);
    let group = s.n_head / s.n_head_kv;
    if s.n_tokens == 1 && (s.start + 1).div_ceil(KV_PAD) * KV_PAD >= SPLIT_FROM {
        return attention_split(pool, q, kv, s, out);
    }
    let out_ptr = OutPtr(out.as_mut_ptr());
    let units = s.n_tokens * s.n_head;
    pool.for_chunks(units, 1.max(units / 64), &|range| {
        let mut scratch = Scratch::new(&s);
        for u in range {
            let (t, h) = (u / s.n_head, u % s.n_head);
            let q_row = &q[(t * s.n_head + h) * dk..][..dk];
            let (_, sum) = attend(q_row, kv, &s, h / group, 0..s.start + t + 1, &mut scratch);
            // SAFETY: unit u owns output row slice (t, h).
            let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add((t * s.n_head + h) * dv), dv) };
            normalise(&scratch.acc, sum, o);
        }
    });
}

/// One token over a long cache: each head's cache view is split in [`SPLIT_PARTS`] equal
/// parts, computed as separate units, then merged in order as
/// `ggml_flash_attn_ext_reduce_partials` merges them (with GCC's fused multiply-adds).
fn attention_split(pool: &ThreadPool, q: &[f32], kv: &LayerKv, s: AttentionShape, out: &mut [f32]) {
    let (dk, dv) = (s.head_dim_k, s.head_dim_v);
    let group = s.n_head / s.n_head_kv;
    let n_ctx = s.start + 1;
    let part = n_ctx.div_ceil(KV_PAD) * KV_PAD / SPLIT_PARTS;
    // Per (head, part): max, sum, then the accumulator.
    let stride = 2 + dv;
    let mut partials = vec![0.0f32; s.n_head * SPLIT_PARTS * stride];
    let ptr = OutPtr(partials.as_mut_ptr());
    pool.for_chunks(s.n_head * SPLIT_PARTS, 1, &|range| {
        let mut scratch = Scratch::new(&s);
        for u in range {
            let (h, p) = (u / SPLIT_PARTS, u % SPLIT_PARTS);
            let rows = (p * part).min(n_ctx)..((p + 1) * part).min(n_ctx);
            let (m, sum) = attend(&q[h * dk..][..dk], kv, &s, h / group, rows, &mut scratch);
            // SAFETY: unit u owns partial slot u.
            let slot = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(u * stride), stride) };
            slot[0] = m;
            slot[1] = sum;
            slot[2..].copy_from_slice(&scratch.acc);
        }
    });
    let mut acc = vec![0.0f32; dv];
    for (h, o) in out.chunks_exact_mut(dv).enumerate().take(s.n_head) {
        let (mut m, mut sum) = (f32::NEG_INFINITY, 0.0f32);
        acc.fill(0.0);
        for p in partials[h * SPLIT_PARTS * stride..].chunks_exact(stride).take(SPLIT_PARTS) {
            let (pm, ps) = (p[0], p[1]);
            if ps == 0.0 {
                continue;
            }
            let new_m = m.max(pm);
            let (old_scale, new_scale) = ((m - new_m).exp(), (pm - new_m).exp());
            for (a, &x) in acc.iter_mut().zip(&p[2..]) {
                *a = a.mul_add(old_scale, x * new_scale);
            }
            sum = sum.mul_add(old_scale, ps * new_scale);
            m = new_m;
        }
        if sum == 0.0 {
            o.copy_from_slice(&acc);
        } else {
            normalise(&acc, sum, o);
        }
    }
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
        for kvh in 0..2 {
            for range in [0..n_ctx, 13..n_ctx] {
                let mut scratch = Scratch::new(&s);
                let fast = attend(&q_row, &kv, &s, kvh, range.clone(), &mut scratch);
                let fast_acc = scratch.acc.clone();
                let generic = attend_generic(&kv, &s, kvh, range, &mut scratch);
                assert_eq!((fast.0.to_bits(), fast.1.to_bits()), (generic.0.to_bits(), generic.1.to_bits()));
                assert!(fast_acc.iter().zip(&scratch.acc).all(|(a, b)| a.to_bits() == b.to_bits()), "kv head {kvh}");
            }
        }
    }
}
