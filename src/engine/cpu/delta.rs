//! The recurrent half of a Gated DeltaNet layer on the CPU: the causal depthwise
//! convolution and the delta rule, in the arithmetic of ggml's `ssm_conv` and fused
//! `gated_delta_net` ops (which llama.cpp's CPU build runs for prompts and decode steps
//! alike, token after token), so a prompt computed in any chunks equals one computed
//! whole, and both equal llama.cpp.

use crate::engine::backend::DeltaRule;
use crate::engine::cpu::ops::{dot_f32, fma_dispatch};
use crate::engine::cpu::pool::ThreadPool;
use crate::engine::cpu::OutPtr;

/// See [`crate::engine::backend::Backend::ssm_conv`]; each output is a fused chain over the
/// taps, oldest first, as GCC compiles ggml's loop.
#[inline(always)]
fn ssm_conv_body(x: &[f32], ch: usize, taps: &[f32], state: &mut [f32], out: &mut [f32]) {
    let k = taps.len() / ch;
    let mut window = Vec::with_capacity(state.len() + x.len());
    window.extend_from_slice(state);
    window.extend_from_slice(x);
    for (t, o) in out.chunks_exact_mut(ch).enumerate() {
        for (c, o) in o.iter_mut().enumerate() {
            let w = &taps[c * k..(c + 1) * k];
            *o = w.iter().enumerate().fold(0.0f32, |acc, (i, &w)| {
                window[(t + i) * ch + c].mul_add(w, acc)
            });
        }
    }
    let keep = state.len();
    state.copy_from_slice(&window[window.len() - keep..]);
}

fma_dispatch!(fn ssm_conv(x: &[f32], ch: usize, taps: &[f32], state: &mut [f32], out: &mut [f32]) => ssm_conv_body);

/// See [`crate::engine::backend::Backend::delta_rule`]. Value heads run in parallel; value
/// head `h` reads key head `h mod n_k_heads`, as llama.cpp tiles them.
pub(super) fn delta_rule(pool: &ThreadPool, job: DeltaRule<'_>) {
    let DeltaRule {
        shape,
        q,
        k,
        v,
        g,
        beta,
        state,
        out,
    } = job;
    let (d, hk, hv) = (shape.head_dim, shape.n_k_heads, shape.n_v_heads);
    let n = g.len() / hv;
    let st = OutPtr(state.as_mut_ptr());
    let o = OutPtr(out.as_mut_ptr());
    pool.for_chunks(hv, 1, &|heads| {
        for h in heads {
            // SAFETY: head h's state and output columns are written by this unit only, and
            // both buffers outlive the parallel region.
            let s = unsafe { std::slice::from_raw_parts_mut(st.get().add(h * d * d), d * d) };
            for t in 0..n {
                let kh = (t * hk + h % hk) * d;
                let out =
                    unsafe { std::slice::from_raw_parts_mut(o.get().add((t * hv + h) * d), d) };
                step(
                    s,
                    &q[kh..kh + d],
                    &k[kh..kh + d],
                    &v[(t * hv + h) * d..][..d],
                    g[t * hv + h],
                    beta[t * hv + h],
                    out,
                );
            }
        }
    });
}

/// One token of one head: decay, the delta update, then the read-out.
#[inline(always)]
fn step_body(s: &mut [f32], q: &[f32], k: &[f32], v: &[f32], g: f32, beta: f32, out: &mut [f32]) {
    let d = q.len();
    let decay = g.exp();
    s.iter_mut().for_each(|x| *x *= decay);
    for (j, row) in s.chunks_exact_mut(d).enumerate() {
        let delta = (v[j] - dot_f32(row, k)) * beta;
        row.iter_mut()
            .zip(k)
            .for_each(|(m, &k)| *m = k.mul_add(delta, *m));
    }
    let scale = 1.0 / (d as f32).sqrt();
    for (j, row) in s.chunks_exact(d).enumerate() {
        out[j] = dot_f32(row, q) * scale;
    }
}

fma_dispatch!(fn step(s: &mut [f32], q: &[f32], k: &[f32], v: &[f32], g: f32, beta: f32, out: &mut [f32]) => step_body);
