//! The SIMD paths agree with the scalar reference bit for bit, and activation quantization
//! follows llama.cpp's rounding.

use super::simd::SimdLevel;
use super::*;

/// Deterministic pseudo-random bytes.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A random row of `ty` whose f16 scales are small finite numbers.
fn weight_row(ty: GgmlType, n: usize, seed: u64) -> Vec<u8> {
    let mut w = bytes(ty.row_bytes(n), seed);
    let f16 = |v: f32| half::f16::from_f32(v).to_bits().to_le_bytes();
    let bb = ty.block_bytes();
    for (i, b) in w.chunks_exact_mut(bb).enumerate() {
        let s = 0.001 + (i % 7) as f32 * 0.0003;
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4XS => {
                b[0..2].copy_from_slice(&f16(s))
            }
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => {
                b[0..2].copy_from_slice(&f16(s));
                b[2..4].copy_from_slice(&f16(-s * 0.5));
            }
            GgmlType::Q6K => b[208..210].copy_from_slice(&f16(s)),
            _ => {}
        }
    }
    if ty == GgmlType::F32 {
        let vals: Vec<u8> = (0..n)
            .flat_map(|i| ((i as f32 * 0.37).sin()).to_le_bytes())
            .collect();
        return vals;
    }
    if ty == GgmlType::F16 {
        return (0..n)
            .flat_map(|i| half::f16::from_f32((i as f32 * 0.37 + seed as f32).sin()).to_le_bytes())
            .collect();
    }
    w
}

const TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::IQ4XS,
];

#[test]
fn every_kernel_level_matches_the_scalar_reference_exactly() {
    let n = 512;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0)
        .collect();
    for level in [SimdLevel::Scalar, SimdLevel::Avx2, SimdLevel::Avx512Vnni] {
        let k = Kernels::at_most(level);
        for &ty in TYPES {
            let at = ty.act_type().unwrap();
            let mut a = vec![0u8; at.row_bytes(n)];
            quantize_activations(at, &x, &mut a);
            for seed in 0..8 {
                let w = weight_row(ty, n, seed);
                let want = scalar_dot(ty, &w, &a, n);
                let got = (k.dot(ty))(&w, &a, n);
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{} at {:?}: {got} vs {want}",
                    ty.name(),
                    k.level
                );
                let want = scalar_dot_batched(ty, &w, &a, n);
                let got = (k.dot_for(ty, BATCHED_FROM, 4))(&w, &a, n);
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{} batched at {:?}: {got} vs {want}",
                    ty.name(),
                    k.level
                );
            }
        }
    }
}

#[test]
fn dot_products_agree_with_dequantized_arithmetic() {
    let n = 256;
    let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.1).cos()).collect();
    for &ty in TYPES {
        let w = weight_row(ty, n, 3);
        let mut deq = vec![0.0; n];
        dequantize_row(ty, &w, &mut deq);
        let exact: f32 = deq.iter().zip(&x).map(|(a, b)| a * b).sum();
        let at = ty.act_type().unwrap();
        let mut a = vec![0u8; at.row_bytes(n)];
        quantize_activations(at, &x, &mut a);
        let got = scalar_dot(ty, &w, &a, n);
        let scale: f32 = deq.iter().map(|v| v.abs()).sum::<f32>() / 64.0 + 1e-6;
        assert!(
            (got - exact).abs() <= scale,
            "{}: {got} vs {exact}",
            ty.name()
        );
    }
}

#[test]
fn q8_activation_rounding_matches_llama_cpp() {
    // amax 127 makes the scale exactly 1: halves round to even, as _mm256_round_ps does.
    let mut x = vec![0.0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -3.5;
    x[3] = 0.5;
    let mut q = vec![0u8; 34];
    quantize_activations(ActType::Q8_0, &x, &mut q);
    assert_eq!(&q[2..6], &[127u8, 2, (-4i8) as u8, 0]);
    let mut q1 = vec![0u8; 36];
    quantize_activations(ActType::Q8_1, &x, &mut q1);
    assert_eq!(f16_at(&q1, 2), 125.0, "s = d * sum(q)");
    // Q8_K scales by the signed extreme: -127/max.
    let mut x = vec![0.0f32; 256];
    x[5] = -10.0;
    x[6] = 5.0;
    let mut k = vec![0u8; 292];
    quantize_activations(ActType::Q8K, &x, &mut k);
    assert_eq!(k[4 + 5] as i8, -127);
    assert_eq!(k[4 + 6] as i8, 64, "63.5 rounds to even");
    assert_eq!(i16::from_le_bytes([k[260], k[261]]), -127 + 64);
}

#[test]
fn type_table_knows_every_format() {
    for (id, name) in [
        (0, "F32"),
        (1, "F16"),
        (30, "BF16"),
        (2, "Q4_0"),
        (3, "Q4_1"),
        (8, "Q8_0"),
        (12, "Q4_K"),
        (13, "Q5_K"),
        (14, "Q6_K"),
        (23, "IQ4_XS"),
    ] {
        let t = GgmlType::from_id(id).unwrap();
        assert_eq!(t.name(), name);
        assert!(t.is_supported());
    }
    assert_eq!(GgmlType::from_id(10), Some(GgmlType::Unsupported(10)));
    assert_eq!(GgmlType::from_id(999), None);
}

#[test]
fn interleaved_kernels_equal_single_rows() {
    let n = 576;
    let rows = 9; // two groups and a row left in the plain layout
    for level in [SimdLevel::Avx2, SimdLevel::Avx512Vnni] {
        let k = Kernels::at_most(level);
        for ty in [GgmlType::Q4_1, GgmlType::Q8_0] {
            let Some(f) = k.interleaved(ty) else { continue };
            let at = ty.act_type().unwrap();
            // 7 tokens: full tiles and a short one at both levels.
            let n_tok = 7;
            let mut a = vec![0u8; at.row_bytes(n) * n_tok];
            for (t, a) in a.chunks_exact_mut(at.row_bytes(n)).enumerate() {
                let x: Vec<f32> = (0..n)
                    .map(|i| ((i * 31 + t * 17) % 97) as f32 / 20.0 - 2.4)
                    .collect();
                quantize_activations(at, &x, a);
            }
            let data: Vec<u8> = (0..rows)
                .flat_map(|s| weight_row(ty, n, s as u64 + 10))
                .collect();
            let packed = interleave::interleave(ty, &data, rows, n).unwrap();
            let gb = interleave::group_bytes(ty, n);
            assert_eq!(packed.len(), 2 * gb);
            for g in 0..2 {
                let mut got = vec![0.0f32; n_tok * 4];
                f(
                    &packed[g * gb..(g + 1) * gb],
                    &a,
                    at.row_bytes(n),
                    n_tok,
                    n,
                    &mut got,
                );
                for t in 0..n_tok {
                    let act = &a[t * at.row_bytes(n)..(t + 1) * at.row_bytes(n)];
                    for r in 0..4 {
                        let row = &data[(4 * g + r) * ty.row_bytes(n)..][..ty.row_bytes(n)];
                        let want = scalar_dot(ty, row, act, n);
                        assert_eq!(
                            got[t * 4 + r].to_bits(),
                            want.to_bits(),
                            "{} {level:?} group {g} token {t} row {r}",
                            ty.name()
                        );
                    }
                }
            }
        }
    }
}
