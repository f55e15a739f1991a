//! Dot products for the 256-element super-block formats (Q5_K, Q6_K, IQ4_XS against Q8_K),
//! reproducing llama.cpp's x86 AVX2 kernels bit for bit, as [`super::lanes`] does for the
//! 32-element formats.
//!
//! In those kernels each super-block yields eight exact i32 lane sums, lane `j` taking
//! elements `4j..4j+4` of every 32-element group with that group's scale, and the lanes are
//! scaled into eight f32 accumulators with one fused multiply-add each; the row ends with
//! `hsum_float_8`. Q5_K adds its minimum term through a separate fused chain, Q6_K
//! subtracts its `32 * scale * bsum` offset from the lanes before conversion.
//!
//! With eight or more activation rows llama.cpp switches to its tiled K-quant matmul, whose
//! float steps differ; the `*_batched` functions reproduce those (see [`super::Kernels`]).
//!
//! Q4_K matrices are repacked by llama.cpp on AVX2 (when their rows are a multiple of
//! eight, as in every real model), which changes their float steps; [`q4_k`] follows those.

use super::dequant::iq4_xs_scale;
use super::lanes::hsum8;
use super::{f16_at, k_scale_min, KVALUES_IQ4NL};

/// Q8_K block accessors: the f32 scale, the quants, and the sum of quants `16g..16g+16`.
#[inline(always)]
pub(super) fn q8k_d(y: &[u8]) -> f32 {
    f32::from_le_bytes([y[0], y[1], y[2], y[3]])
}

#[inline(always)]
fn q8k_q(y: &[u8], e: usize) -> i32 {
    y[4 + e] as i8 as i32
}

#[inline(always)]
pub(super) fn q8k_bsum(y: &[u8], g: usize) -> i32 {
    i16::from_le_bytes([y[260 + 2 * g], y[261 + 2 * g]]) as i32
}

/// Adds `scale * x[e] * q8[base + e]` for one 32-element group to the lane sums.
#[inline(always)]
fn add_group(
    lanes: &mut [i32; 8],
    y: &[u8],
    base: usize,
    scale: impl Fn(usize) -> i32,
    x: impl Fn(usize) -> i32,
) {
    for (j, lane) in lanes.iter_mut().enumerate() {
        let mut s = 0i32;
        for e in 4 * j..4 * j + 4 {
            s += scale(e) * x(e) * q8k_q(y, base + e);
        }
        *lane += s;
    }
}

#[inline(always)]
fn fma_lanes(acc: &mut [f32; 8], d: f32, lanes: [i32; 8]) {
    for (a, l) in acc.iter_mut().zip(lanes) {
        *a = d.mul_add(l as f32, *a);
    }
}

/// Q5_K's (and Q4_K's) exact minimum term of a super-block: `sum(m_g * bsums_g)`.
#[inline(always)]
pub(super) fn k_mins(x: &[u8], y: &[u8]) -> i32 {
    (0..8)
        .map(|g| k_scale_min(g, &x[4..16]).1 as i32 * (q8k_bsum(y, 2 * g) + q8k_bsum(y, 2 * g + 1)))
        .sum()
}

/// Q5_K super-block: the lane sums and the exact minimum term.
#[inline(always)]
fn q5_k_block(x: &[u8], y: &[u8]) -> ([i32; 8], i32) {
    let (scales, qh, qs) = (&x[4..16], &x[16..48], &x[48..176]);
    let mins = k_mins(x, y);
    let mut lanes = [0i32; 8];
    for g in 0..8 {
        let sc = k_scale_min(g, scales).0 as i32;
        let (q, shift) = (&qs[32 * (g / 2)..], 4 * (g % 2));
        add_group(
            &mut lanes,
            y,
            32 * g,
            |_| sc,
            |e| (((q[e] >> shift) & 0xF) | (((qh[e] >> g) & 1) << 4)) as i32,
        );
    }
    (lanes, mins)
}

/// Q4_K super-block: the exact scaled sum and minimum term.
#[inline(always)]
fn q4_k_block(x: &[u8], y: &[u8]) -> (i32, i32) {
    let (scales, qs) = (&x[4..16], &x[16..144]);
    let mut isum = 0i32;
    for g in 0..8 {
        let sc = k_scale_min(g, scales).0;
        let (q, shift) = (&qs[32 * (g / 2)..], 4 * (g % 2));
        let s: i32 = (0..32)
            .map(|e| ((q[e] >> shift) & 0xF) as i32 * q8k_q(y, 32 * g + e))
            .sum();
        isum += sc as i32 * s;
    }
    (isum, k_mins(x, y))
}

/// Q6_K super-block lane sums, with the `32 * scale * bsum` offset already subtracted.
#[inline(always)]
fn q6_k_block(x: &[u8], y: &[u8]) -> [i32; 8] {
    let sc = |i: usize| x[192 + i] as i8 as i32;
    let mut lanes = [0i32; 8];
    for half in 0..2 {
        let (ql, qh) = (&x[64 * half..], &x[128 + 32 * half..]);
        // The four 32-element groups of this half: low nibbles of ql[0..32], of ql[32..64],
        // high nibbles of each, with two bits of qh apiece (values 0..63).
        for v in 0..4 {
            let (lo, shift) = (&ql[32 * (v % 2)..], 4 * (v / 2));
            add_group(
                &mut lanes,
                y,
                128 * half + 32 * v,
                |e| sc(8 * half + 2 * v + e / 16),
                |e| (((lo[e] >> shift) & 0xF) | (((qh[e] >> (2 * v)) & 3) << 4)) as i32,
            );
        }
    }
    for (m, lane) in lanes.iter_mut().enumerate() {
        *lane -= 32 * (q8k_bsum(y, 2 * m) * sc(2 * m) + q8k_bsum(y, 2 * m + 1) * sc(2 * m + 1));
    }
    lanes
}

/// IQ4_XS super-block lane sums.
#[inline(always)]
fn iq4_xs_block(x: &[u8], y: &[u8]) -> [i32; 8] {
    let qs = &x[8..136];
    let mut lanes = [0i32; 8];
    for g in 0..8 {
        let (q, ls) = (&qs[16 * g..], iq4_xs_scale(x, g) - 32);
        add_group(
            &mut lanes,
            y,
            32 * g,
            |_| ls,
            |e| {
                let nibble = if e < 16 { q[e] & 0xF } else { q[e - 16] >> 4 };
                KVALUES_IQ4NL[nibble as usize] as i32
            },
        );
    }
    lanes
}

/// The super-blocks of one row: `(weight block, activation block)` pairs.
#[inline(always)]
pub(super) fn blocks<'a>(
    w: &'a [u8],
    a: &'a [u8],
    n: usize,
    wb: usize,
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
    w.chunks_exact(wb).zip(a.chunks_exact(292)).take(n / 256)
}

// One activation row (`ggml_vec_dot_*_q8_K`): eight lane accumulators, then `hsum_float_8`.

#[inline(always)]
pub fn q5_k(w: &[u8], a: &[u8], n: usize) -> f32 {
    let (mut acc, mut summs) = ([0.0f32; 8], 0.0f32);
    for (x, y) in blocks(w, a, n, 176) {
        let (lanes, mins) = q5_k_block(x, y);
        summs = (mins as f32).mul_add(-q8k_d(y) * f16_at(x, 2), summs);
        fma_lanes(&mut acc, q8k_d(y) * f16_at(x, 0), lanes);
    }
    hsum8(acc) + summs
}

#[inline(always)]
pub fn q6_k(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x, y) in blocks(w, a, n, 210) {
        fma_lanes(&mut acc, q8k_d(y) * f16_at(x, 208), q6_k_block(x, y));
    }
    hsum8(acc)
}

#[inline(always)]
pub fn iq4_xs(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x, y) in blocks(w, a, n, 136) {
        fma_lanes(&mut acc, f16_at(x, 0) * q8k_d(y), iq4_xs_block(x, y));
    }
    hsum8(acc)
}

/// Q4_K as llama.cpp computes it on AVX2 at any batch size: it repacks Q4_K matrices into
/// eight-row tiles (`ggml_gemv/gemm_q4_K_8x8_q8_K`), which scale each super-block's sum by
/// `d_w * d_a` into one fused chain and the minimum terms into another, subtracted at the end.
#[inline(always)]
pub fn q4_k(w: &[u8], a: &[u8], n: usize) -> f32 {
    let (mut acc, mut acc_min) = (0.0f32, 0.0f32);
    for (x, y) in blocks(w, a, n, 144) {
        let (isum, imin) = q4_k_block(x, y);
        acc = (isum as f32).mul_add(f16_at(x, 0) * q8k_d(y), acc);
        acc_min = (imin as f32).mul_add(f16_at(x, 2) * q8k_d(y), acc_min);
    }
    acc - acc_min
}

// Eight or more activation rows (`ggml-cpu/tiled`, its AVX-512 VNNI microkernel): per
// super-block the whole integer sum is scaled by the weight's `d` first, the minimum term is
// taken off with a fused multiply-add, and one fused chain over the super-blocks applies the
// activation's `d`.

/// The batched float steps over the super-blocks of one row; `block` gives a super-block's
/// weight scale, its minimum term (scale and sum) if the format has one, and its lanes.
#[inline(always)]
pub(super) fn batched(
    w: &[u8],
    a: &[u8],
    n: usize,
    wb: usize,
    block: impl Fn(&[u8], &[u8]) -> (f32, Option<(f32, i32)>, [i32; 8]),
) -> f32 {
    let mut out = 0.0f32;
    for (x, y) in blocks(w, a, n, wb) {
        let (d, min, lanes) = block(x, y);
        let mut r = lanes.iter().sum::<i32>() as f32 * d;
        if let Some((dmin, mins)) = min {
            r = (-dmin).mul_add(mins as f32, r);
        }
        out = r.mul_add(q8k_d(y), out);
    }
    out
}

#[inline(always)]
pub fn q5_k_batched(w: &[u8], a: &[u8], n: usize) -> f32 {
    batched(w, a, n, 176, |x, y| {
        let (lanes, mins) = q5_k_block(x, y);
        (f16_at(x, 0), Some((f16_at(x, 2), mins)), lanes)
    })
}

#[inline(always)]
pub fn q6_k_batched(w: &[u8], a: &[u8], n: usize) -> f32 {
    batched(w, a, n, 210, |x, y| {
        (f16_at(x, 208), None, q6_k_block(x, y))
    })
}

#[inline(always)]
pub fn iq4_xs_batched(w: &[u8], a: &[u8], n: usize) -> f32 {
    batched(w, a, n, 136, |x, y| {
        (f16_at(x, 0), None, iq4_xs_block(x, y))
    })
}
