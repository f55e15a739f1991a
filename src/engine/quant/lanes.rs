//! Dot products for the 32-element block formats, written to reproduce llama.cpp's x86
//! (AVX2) kernels bit for bit: eight f32 lanes, lane `j` accumulating with a fused
//! multiply-add the exact integer sum of elements `4j..4j+4` of each block, then a fixed
//! horizontal sum. Only this exact order keeps long greedy generations token-identical to
//! llama.cpp, because a 30-layer model amplifies last-bit differences.
//!
//! The functions are `#[inline(always)]` so [`super::simd`] can compile them both plainly
//! (the scalar reference) and under `target_feature(avx2, fma)`, where LLVM vectorises them;
//! fused multiply-add is exact in both, so the two give identical results.

use super::dequant::q5_values;
use super::f16_at;

/// llama.cpp's `hsum_float_8`: (hi + lo) halves, then pairwise, then the last two.
#[inline(always)]
pub fn hsum8(a: [f32; 8]) -> f32 {
    let r = [a[4] + a[0], a[5] + a[1], a[6] + a[2], a[7] + a[3]];
    let (s0, s1) = (r[0] + r[2], r[1] + r[3]);
    s0 + s1
}

/// Lane sums of one block: `x` unsigned or signed weights widened to i32, `y` the int8
/// activation quants.
#[inline(always)]
fn lanes(x: &[i32; 32], y: &[u8]) -> [f32; 8] {
    let mut out = [0.0f32; 8];
    for (j, o) in out.iter_mut().enumerate() {
        let mut s = 0i32;
        for e in 4 * j..4 * j + 4 {
            s += x[e] * y[e] as i8 as i32;
        }
        *o = s as f32;
    }
    out
}

#[inline(always)]
fn nibbles(qs: &[u8], offset: i32) -> [i32; 32] {
    let mut x = [0i32; 32];
    for j in 0..16 {
        x[j] = (qs[j] & 0xF) as i32 - offset;
        x[j + 16] = (qs[j] >> 4) as i32 - offset;
    }
    x
}

#[inline(always)]
fn fma_lanes(acc: &mut [f32; 8], d: f32, l: [f32; 8]) {
    for (a, l) in acc.iter_mut().zip(l) {
        *a = d.mul_add(l, *a);
    }
}

/// Blocks with a scale only (`x = d * q`): Q4_0, Q5_0, Q8_0 against Q8_0.
#[inline(always)]
fn symmetric(w: &[u8], a: &[u8], n: usize, wb: usize, quants: impl Fn(&[u8]) -> [i32; 32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x, y) in w.chunks_exact(wb).zip(a.chunks_exact(34)).take(n / 32) {
        let d = f16_at(x, 0) * f16_at(y, 0);
        fma_lanes(&mut acc, d, lanes(&quants(x), &y[2..34]));
    }
    hsum8(acc)
}

/// Blocks with a scale and a minimum (`x = d * q + m`): Q4_1, Q5_1 against Q8_1, whose
/// `s = d * sum(q)` carries the minimum's contribution.
#[inline(always)]
fn affine(w: &[u8], a: &[u8], n: usize, wb: usize, quants: impl Fn(&[u8]) -> [i32; 32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut summs = 0.0f32;
    for (x, y) in w.chunks_exact(wb).zip(a.chunks_exact(36)).take(n / 32) {
        summs = f16_at(x, 2).mul_add(f16_at(y, 2), summs);
        let d = f16_at(x, 0) * f16_at(y, 0);
        fma_lanes(&mut acc, d, lanes(&quants(x), &y[4..36]));
    }
    hsum8(acc) + summs
}

#[inline(always)]
pub fn q4_0(w: &[u8], a: &[u8], n: usize) -> f32 {
    symmetric(w, a, n, 18, |x| nibbles(&x[2..18], 8))
}

#[inline(always)]
pub fn q5_0(w: &[u8], a: &[u8], n: usize) -> f32 {
    symmetric(w, a, n, 22, |x| {
        q5_values(&x[2..6], &x[6..22]).map(|v| v as i32 - 16)
    })
}

#[inline(always)]
pub fn q8_0(w: &[u8], a: &[u8], n: usize) -> f32 {
    symmetric(w, a, n, 34, |x| {
        std::array::from_fn(|e| x[2 + e] as i8 as i32)
    })
}

#[inline(always)]
pub fn q4_1(w: &[u8], a: &[u8], n: usize) -> f32 {
    affine(w, a, n, 20, |x| nibbles(&x[4..20], 0))
}

#[inline(always)]
pub fn q5_1(w: &[u8], a: &[u8], n: usize) -> f32 {
    affine(w, a, n, 24, |x| {
        q5_values(&x[4..8], &x[8..24]).map(|v| v as i32)
    })
}

/// F16 weights against F16 activations as ggml's AVX-512 `ggml_vec_dot_f16` sums them: four
/// 16-lane fused accumulators over 64-element steps, folded (0+2, 1+3, 0+1), then GCC's
/// `_mm512_reduce_add_ps` order; elements past the last full step are added in f64.
#[inline(always)]
pub fn f16(w: &[u8], a: &[u8], n: usize) -> f32 {
    let np = n / 64 * 64;
    let mut acc = [[0.0f32; 16]; 4];
    let (mut wf, mut af) = ([0.0f32; 64], [0.0f32; 64]);
    for i in (0..np).step_by(64) {
        for e in 0..64 {
            wf[e] = f16_at(w, 2 * (i + e));
            af[e] = f16_at(a, 2 * (i + e));
        }
        for (j, acc) in acc.iter_mut().enumerate() {
            for (l, s) in acc.iter_mut().enumerate() {
                *s = wf[16 * j + l].mul_add(af[16 * j + l], *s);
            }
        }
    }
    let mut sum = crate::engine::cpu::ops::fold_reduce(&acc) as f64;
    for e in np..n {
        sum += (f16_at(w, 2 * e) * f16_at(a, 2 * e)) as f64;
    }
    sum as f32
}
