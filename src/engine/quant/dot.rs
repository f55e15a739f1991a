//! Scalar reference dot products: one weight row (`w`, in its own type) against one
//! activation row (`a`, in the weight type's [`ActType`](super::ActType)), `n` elements.
//! Integer sums inside a block are exact; blocks are scaled and accumulated in f32 in
//! llama.cpp's exact order (see [`lanes`] and [`lanes_k`]).

use super::{lanes, lanes_k, GgmlType};

pub fn scalar_dot(ty: GgmlType, w: &[u8], a: &[u8], n: usize) -> f32 {
    match ty {
        GgmlType::F32 => f32_dot(w, a, n),
        GgmlType::F16 => lanes::f16(w, a, n),
        GgmlType::BF16 => half_dot(w, a, n, |b| half::bf16::from_bits(b).to_f32()),
        GgmlType::Q4_0 => lanes::q4_0(w, a, n),
        GgmlType::Q4_1 => lanes::q4_1(w, a, n),
        GgmlType::Q5_0 => lanes::q5_0(w, a, n),
        GgmlType::Q5_1 => lanes::q5_1(w, a, n),
        GgmlType::Q8_0 => lanes::q8_0(w, a, n),
        GgmlType::Q4K => lanes_k::q4_k(w, a, n),
        GgmlType::Q5K => lanes_k::q5_k(w, a, n),
        GgmlType::Q6K => lanes_k::q6_k(w, a, n),
        GgmlType::IQ4XS => lanes_k::iq4_xs(w, a, n),
        GgmlType::Unsupported(_) => unreachable!("callers check is_supported"),
    }
}

/// The reference for a matmul with [`BATCHED_FROM`] or more activation rows: llama.cpp then
/// computes Q5_K, Q6_K and IQ4_XS with its tiled kernel, whose float steps differ from the
/// one-row kernel's (and F32 with tinyBLAS, which it already does from 2 activation rows
/// when the weight has a multiple of 4 rows). Other types are computed the same way at any
/// batch size.
pub fn scalar_dot_batched(ty: GgmlType, w: &[u8], a: &[u8], n: usize) -> f32 {
    match ty {
        GgmlType::F32 => f32_dot_tiled(w, a, n),
        GgmlType::Q5K => lanes_k::q5_k_batched(w, a, n),
        GgmlType::Q6K => lanes_k::q6_k_batched(w, a, n),
        GgmlType::IQ4XS => lanes_k::iq4_xs_batched(w, a, n),
        _ => scalar_dot(ty, w, a, n),
    }
}

/// Activation rows from which [`scalar_dot_batched`] applies (llama.cpp's
/// `ggml_tiled_min_batch`).
pub const BATCHED_FROM: usize = 8;

/// Little-endian f32 bytes as floats.
fn floats(b: &[u8], n: usize) -> Vec<f32> {
    b[..4 * n]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// F32 as llama.cpp computes one row: `ggml_vec_dot_f32`'s AVX-512 order.
fn f32_dot(w: &[u8], a: &[u8], n: usize) -> f32 {
    crate::engine::cpu::ops::dot_f32_one(&floats(w, n), &floats(a, n))
}

/// F32 as llama.cpp computes a batch: llamafile's tinyBLAS, one 16-lane fused accumulator
/// then `_mm512_reduce_add_ps` (a row whose length is not a multiple of 16 is left to the
/// one-row kernel, as tinyBLAS leaves it).
fn f32_dot_tiled(w: &[u8], a: &[u8], n: usize) -> f32 {
    if !n.is_multiple_of(16) {
        return f32_dot(w, a, n);
    }
    crate::engine::cpu::ops::dot_lanes_16(&floats(w, n), &floats(a, n))
}

fn half_dot(w: &[u8], a: &[u8], n: usize, cvt: fn(u16) -> f32) -> f32 {
    let h = |b: &[u8], i: usize| cvt(u16::from_le_bytes([b[2 * i], b[2 * i + 1]]));
    (0..n).map(|i| (h(w, i) * h(a, i)) as f64).sum::<f64>() as f32
}
