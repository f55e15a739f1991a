//! Scalar reference dot products: one weight row (`w`, in its own type) against one
//! activation row (`a`, in the weight type's [`ActType`](super::ActType)), `n` elements.
//! Integer sums inside a block are exact; blocks are scaled and accumulated in f32. The
//! 32-element formats follow llama.cpp's lane order exactly (see [`lanes`]).

use super::dequant::iq4_xs_scale;
use super::{f16_at, k_scale_min, lanes, GgmlType, KVALUES_IQ4NL};

pub fn scalar_dot(ty: GgmlType, w: &[u8], a: &[u8], n: usize) -> f32 {
    match ty {
        GgmlType::F32 => f32_dot(w, a, n),
        GgmlType::F16 => half_dot(w, a, n, |b| half::f16::from_bits(b).to_f32()),
        GgmlType::BF16 => half_dot(w, a, n, |b| half::bf16::from_bits(b).to_f32()),
        GgmlType::Q4_0 => lanes::q4_0(w, a, n),
        GgmlType::Q4_1 => lanes::q4_1(w, a, n),
        GgmlType::Q5_0 => lanes::q5_0(w, a, n),
        GgmlType::Q5_1 => lanes::q5_1(w, a, n),
        GgmlType::Q8_0 => lanes::q8_0(w, a, n),
        GgmlType::Q4K => q4_k(w, a, n),
        GgmlType::Q5K => q5_k(w, a, n),
        GgmlType::Q6K => q6_k(w, a, n),
        GgmlType::IQ4XS => iq4_xs(w, a, n),
        GgmlType::Unsupported(_) => unreachable!("callers check is_supported"),
    }
}

fn f32_dot(w: &[u8], a: &[u8], n: usize) -> f32 {
    let f = |b: &[u8], i: usize| f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    (0..n).map(|i| (f(w, i) * f(a, i)) as f64).sum::<f64>() as f32
}

fn half_dot(w: &[u8], a: &[u8], n: usize, cvt: fn(u16) -> f32) -> f32 {
    let h = |b: &[u8], i: usize| cvt(u16::from_le_bytes([b[2 * i], b[2 * i + 1]]));
    (0..n).map(|i| (h(w, i) * h(a, i)) as f64).sum::<f64>() as f32
}






/// Q8_K block accessors: scale, quants, and the sum of quants `g*16..g*16+16`.
#[inline]
fn q8k_d(y: &[u8]) -> f32 {
    f32::from_le_bytes([y[0], y[1], y[2], y[3]])
}
#[inline]
fn q8k_bsum(y: &[u8], g: usize) -> i32 {
    i16::from_le_bytes([y[260 + 2 * g], y[261 + 2 * g]]) as i32
}

fn q4_k(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.chunks_exact(144).zip(a.chunks_exact(292)).take(n / 256) {
        let (scales, qs, q8) = (&x[4..16], &x[16..144], &y[4..260]);
        let (mut isum, mut imin) = (0i32, 0i32);
        for j in 0..8 {
            let (sc, m) = k_scale_min(j, scales);
            imin += m as i32 * (q8k_bsum(y, 2 * j) + q8k_bsum(y, 2 * j + 1));
            let shift = 4 * (j % 2);
            let s: i32 = (0..32).map(|l| ((qs[32 * (j / 2) + l] >> shift) & 0xF) as i32 * q8[32 * j + l] as i8 as i32).sum();
            isum += sc as i32 * s;
        }
        let d = q8k_d(y);
        sum += d * f16_at(x, 0) * isum as f32 - d * f16_at(x, 2) * imin as f32;
    }
    sum
}

fn q5_k(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.chunks_exact(176).zip(a.chunks_exact(292)).take(n / 256) {
        let (scales, qh, qs, q8) = (&x[4..16], &x[16..48], &x[48..176], &y[4..260]);
        let (mut isum, mut imin) = (0i32, 0i32);
        for j in 0..8 {
            let (sc, m) = k_scale_min(j, scales);
            imin += m as i32 * (q8k_bsum(y, 2 * j) + q8k_bsum(y, 2 * j + 1));
            let shift = 4 * (j % 2);
            let s: i32 = (0..32)
                .map(|l| {
                    let v = ((qs[32 * (j / 2) + l] >> shift) & 0xF) | (((qh[l] >> j) & 1) << 4);
                    v as i32 * q8[32 * j + l] as i8 as i32
                })
                .sum();
            isum += sc as i32 * s;
        }
        let d = q8k_d(y);
        sum += d * f16_at(x, 0) * isum as f32 - d * f16_at(x, 2) * imin as f32;
    }
    sum
}

fn q6_k(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.chunks_exact(210).zip(a.chunks_exact(292)).take(n / 256) {
        let q8 = &y[4..260];
        let mut isum = 0i32;
        for half in 0..2 {
            let (ql, qh, sc) = (&x[64 * half..], &x[128 + 32 * half..], &x[192 + 8 * half..]);
            let q8 = &q8[128 * half..];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                isum += sc[is] as i8 as i32 * q1 * q8[l] as i8 as i32
                    + sc[is + 2] as i8 as i32 * q2 * q8[l + 32] as i8 as i32
                    + sc[is + 4] as i8 as i32 * q3 * q8[l + 64] as i8 as i32
                    + sc[is + 6] as i8 as i32 * q4 * q8[l + 96] as i8 as i32;
            }
        }
        sum += f16_at(x, 208) * q8k_d(y) * isum as f32;
    }
    sum
}

fn iq4_xs(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in w.chunks_exact(136).zip(a.chunks_exact(292)).take(n / 256) {
        let (qs, q8) = (&x[8..136], &y[4..260]);
        let mut isum = 0i32;
        for ib in 0..8 {
            let q = &qs[16 * ib..];
            let q8 = &q8[32 * ib..];
            let s: i32 = (0..16)
                .map(|j| {
                    KVALUES_IQ4NL[(q[j] & 0xF) as usize] as i32 * q8[j] as i8 as i32
                        + KVALUES_IQ4NL[(q[j] >> 4) as usize] as i32 * q8[j + 16] as i8 as i32
                })
                .sum();
            isum += (iq4_xs_scale(x, ib) - 32) * s;
        }
        sum += f16_at(x, 0) * q8k_d(y) * isum as f32;
    }
    sum
}
