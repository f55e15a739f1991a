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

/// Query rows from which llama.cpp switches to its tiled all-f32 kernel.
pub const TILE_Q: usize = 64;

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: each (token, head) output slice is written by exactly one thread.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Through a method, so closures capture the whole (Sync) wrapper, not the raw field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[inline]
fn r16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

pub fn attention(pool: &ThreadPool, q: &[f32], kv: &LayerKv, s: AttentionShape, out: &mut [f32]) {
    let (dk, dv) = (s.head_dim_k, s.head_dim_v);
    let group = s.n_head / s.n_head_kv;
    let (kv_k, kv_v) = (s.n_head_kv * dk, s.n_head_kv * dv);
    let scale = 1.0 / (dk as f32).sqrt();
    let half_mode = s.n_tokens < TILE_Q && std::env::var("XA").is_err();
    let out_ptr = OutPtr(out.as_mut_ptr());
    let units = s.n_tokens * s.n_head;
    pool.for_chunks(units, 1.max(units / 64), &|range| {
        let mut qh = vec![0.0f32; dk];
        let mut acc = vec![0.0f32; dv];
        for u in range {
            let (t, h) = (u / s.n_head, u % s.n_head);
            let kvh = h / group;
            let n_ctx = s.start + t + 1;
            let q_row = &q[(t * s.n_head + h) * dk..][..dk];
            for (d, &v) in qh.iter_mut().zip(q_row) {
                *d = if half_mode { r16(v) } else { v };
            }
            acc.fill(0.0);
            let (mut m, mut sum) = (f32::NEG_INFINITY, 0.0f32);
            for ic in 0..n_ctx {
                let k = &kv.k[ic * kv_k + kvh * dk..][..dk];
                let v = &kv.v[ic * kv_v + kvh * dv..][..dv];
                let sc = k.iter().zip(&qh).map(|(a, b)| a * b).sum::<f32>() * scale;
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
                sum = sum * ms + vs;
            }
            // SAFETY: unit u owns output row slice (t, h).
            let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add((t * s.n_head + h) * dv), dv) };
            let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
            o.iter_mut().zip(&acc).for_each(|(o, a)| *o = a * inv);
        }
    });
}
