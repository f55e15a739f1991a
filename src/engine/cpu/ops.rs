//! The element-wise operations, written to reproduce ggml's x86 arithmetic bit for bit
//! (fused multiply-adds where GCC fuses them, ggml's own `expf` approximation in SiLU).
//!
//! Each hot function has an `#[inline(always)]` body and two entry points: a plain one and
//! one compiled with FMA/F16C enabled, chosen by [`fma_available`]. Fused multiply-add is
//! exact either way, so both give identical results; the second is just fast.

use std::sync::OnceLock;

use crate::engine::model::config::{RopeConfig, RopePos};

/// Whether this CPU has FMA, AVX2 and F16C (checked once).
pub fn fma_available() -> bool {
    static F: OnceLock<bool> = OnceLock::new();
    *F.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("f16c")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// Runs `$body` compiled with FMA, AVX2 and F16C when the CPU has them, plainly otherwise.
macro_rules! fma_dispatch {
    (fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $body:path) => {
        pub(crate) fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma,f16c")]
                unsafe fn fast($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if $crate::engine::cpu::ops::fma_available() {
                    // SAFETY: the features were detected above.
                    return unsafe { fast($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use fma_dispatch;

/// `x = x / rms(x) * w`, with the sum of squares in f64 as ggml does.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for (v, &w) in x.iter_mut().zip(w) {
        *v = (*v * scale) * w;
    }
}

/// Rotates each head of one token row. Angles advance by repeated multiplication with
/// `base^(-2/n_dims)` as ggml's rope cache does, and the rotation fuses like GCC's build.
/// With IMRoPE sections, each rotary pair takes its angle from the time, height, width or
/// extra component of `pos` (ggml's `ggml_mrope_cache_init`); otherwise from `pos[0]`.
#[inline(always)]
fn rope_body(
    row: &mut [f32],
    head_dim: usize,
    pos: RopePos,
    rope: &RopeConfig,
    freq_factors: Option<&[f32]>,
) {
    let n = rope.n_dims;
    let theta_scale = rope.base.powf(-2.0 / n as f32);
    let mut cs = [(0.0f32, 0.0f32); 256];
    let mut theta = pos.map(|p| p as f32);
    for (i, c) in cs.iter_mut().take(n / 2).enumerate() {
        let ff = freq_factors.map_or(1.0, |f| f[i]);
        let t = rope.freq_scale * (theta[rope.pair_component(i)] / ff);
        *c = (t.cos(), t.sin());
        theta.iter_mut().for_each(|t| *t *= theta_scale);
    }
    for head in row.chunks_exact_mut(head_dim) {
        for (i, &(cos, sin)) in cs.iter().take(n / 2).enumerate() {
            let (a, b) = if rope.neox {
                (i, i + n / 2)
            } else {
                (2 * i, 2 * i + 1)
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0.mul_add(cos, -(x1 * sin));
            head[b] = x0.mul_add(sin, x1 * cos);
        }
    }
}

fma_dispatch!(fn rope(row: &mut [f32], head_dim: usize, pos: RopePos, rope: &RopeConfig, freq_factors: Option<&[f32]>) => rope_body);

/// ggml's vectorised `expf` (the AVX-512 `ggml_v_expf`), one lane at a time.
#[inline(always)]
pub(crate) fn ggml_expf(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), r); // 0x1.715476p+0
    let n = z - r;
    let b = (-n).mul_add(
        f32::from_bits(0x35bf_be8e),
        (-n).mul_add(f32::from_bits(0x3f31_7200), x),
    );
    let u = b * b;
    let j = f32::from_bits(0x3c07_2010)
        .mul_add(b, f32::from_bits(0x3d2b_9f17))
        .mul_add(
            u,
            f32::from_bits(0x3e2a_af33).mul_add(b, f32::from_bits(0x3efffedb)),
        )
        .mul_add(u, f32::from_bits(0x3f7f_fff6).mul_add(b, 1.0));
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    // scalef(j, n): one rounding of j * 2^n. The product is exact in f64 (|n| <= 192).
    ((j as f64) * f64::from_bits(((n as i64 + 1023) as u64) << 52)) as f32
}

#[inline(always)]
fn swiglu_body(gate: &mut [f32], up: &[f32]) {
    let vec_len = gate.len() / 16 * 16;
    let (head, tail) = gate.split_at_mut(vec_len);
    for (g, &u) in head.iter_mut().zip(up) {
        *g = (*g / (1.0 + ggml_expf(-*g))) * u;
    }
    // ggml's scalar tail uses libm's expf.
    for (g, &u) in tail.iter_mut().zip(&up[vec_len..]) {
        *g = (*g / (1.0 + (-*g).exp())) * u;
    }
}

fma_dispatch!(fn swiglu(gate: &mut [f32], up: &[f32]) => swiglu_body);

/// `x = x / (1 + exp(-x))` over one row, as `ggml_vec_silu_f32` computes it: 16 lanes at a
/// time with ggml's vector `expf`, the tail with libm's.
#[inline(always)]
fn silu_body(x: &mut [f32]) {
    let vec_len = x.len() / 16 * 16;
    let (head, tail) = x.split_at_mut(vec_len);
    for v in head {
        *v /= 1.0 + ggml_expf(-*v);
    }
    for v in tail {
        *v /= 1.0 + (-*v).exp();
    }
}

fma_dispatch!(fn silu(x: &mut [f32]) => silu_body);

/// `x / |x|` as llama.cpp's Gated DeltaNet computes it: an RMS norm with `eps / n`, then a
/// scale by `1 / sqrt(n)`.
pub fn l2_norm(x: &mut [f32], eps: f32) {
    let n = x.len() as f32;
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps / n).sqrt();
    let unit = 1.0 / n.sqrt();
    x.iter_mut().for_each(|v| *v = (*v * scale) * unit);
}

/// The four 16-lane fused accumulators of ggml's AVX-512 dot products over the whole
/// 64-element steps of `x · y` (the caller adds the rest).
#[inline(always)]
pub(crate) fn accumulate_64(x: &[f32], y: &[f32]) -> [[f32; 16]; 4] {
    let mut acc = [[0.0f32; 16]; 4];
    for i in (0..x.len() / 64 * 64).step_by(64) {
        for (j, a) in acc.iter_mut().enumerate() {
            for (l, a) in a.iter_mut().enumerate() {
                let e = i + 16 * j + l;
                *a = x[e].mul_add(y[e], *a);
            }
        }
    }
    acc
}

/// Four 16-lane accumulators as ggml's AVX-512 dot products end: folded (0+2, 1+3, 0+1),
/// then GCC's `_mm512_reduce_add_ps` order (halves, quarters, then the pairs).
#[inline(always)]
pub(crate) fn fold_reduce(acc: &[[f32; 16]; 4]) -> f32 {
    let v: [f32; 16] = std::array::from_fn(|l| (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]));
    reduce_add_16(&v)
}

/// GCC's `_mm512_reduce_add_ps` order over 16 lanes: halves, quarters, then the pairs.
#[inline(always)]
pub(crate) fn reduce_add_16(v: &[f32]) -> f32 {
    let t3: [f32; 8] = std::array::from_fn(|i| v[i + 8] + v[i]);
    let t6: [f32; 4] = std::array::from_fn(|i| t3[i + 4] + t3[i]);
    (t6[0] + t6[2]) + (t6[1] + t6[3])
}

/// `x · y` (a multiple of 16 long) as llamafile's tinyBLAS sums it on AVX-512: one 16-lane
/// fused accumulator, then `_mm512_reduce_add_ps`.
#[inline(always)]
fn dot_lanes_16_body(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    for (a, b) in x.chunks_exact(16).zip(y.chunks_exact(16)) {
        for l in 0..16 {
            acc[l] = a[l].mul_add(b[l], acc[l]);
        }
    }
    reduce_add_16(&acc)
}

fma_dispatch!(fn dot_lanes_16(x: &[f32], y: &[f32]) -> f32 => dot_lanes_16_body);

fma_dispatch!(fn dot_f32_one(x: &[f32], y: &[f32]) -> f32 => dot_f32);

/// `x · y` as ggml's AVX-512 `ggml_vec_dot_f32` sums it: four 16-lane fused accumulators
/// over 64-element steps, folded (0+2, 1+3, 0+1), then GCC's `_mm512_reduce_add_ps` order;
/// elements past the last full step are fused onto the sum one by one.
#[inline(always)]
pub(crate) fn dot_f32(x: &[f32], y: &[f32]) -> f32 {
    let np = x.len() / 64 * 64;
    let mut sum = fold_reduce(&accumulate_64(x, y));
    for e in np..x.len() {
        sum = x[e].mul_add(y[e], sum);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ggml_expf_is_close_to_libm() {
        for i in -2000..2000 {
            let x = i as f32 * 0.01;
            let (a, b) = (ggml_expf(x), x.exp());
            assert!(((a - b) / b).abs() < 3e-7, "{x}: {a} vs {b}");
        }
        assert_eq!(ggml_expf(-200.0), 0.0);
        assert_eq!(ggml_expf(200.0), f32::INFINITY);
    }

    #[test]
    fn fast_and_plain_paths_agree_bit_for_bit() {
        let mut a: Vec<f32> = (0..100).map(|i| (i as f32 - 50.0) * 0.173).collect();
        let mut b = a.clone();
        let up: Vec<f32> = (0..100).map(|i| 1.0 + i as f32 * 0.01).collect();
        swiglu(&mut a, &up);
        swiglu_body(&mut b, &up);
        assert_eq!(a, b);
    }
}
