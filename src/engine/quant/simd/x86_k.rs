//! AVX2 kernels for the super-block formats (Q5_K, Q6_K, IQ4_XS against Q8_K): llama.cpp's
//! own AVX2 integer steps, so each super-block yields exactly the eight lane sums of
//! [`crate::engine::quant::lanes_k`], then the same float steps (one-row or batched). A unit
//! test checks them against the scalar reference bit for bit.

use std::arch::x86_64::*;

use super::x86::hsum8;
use crate::engine::quant::lanes_k::{batched, blocks, k_mins, q8k_d};
use crate::engine::quant::{f16_at, k_scale_min, KVALUES_IQ4NL};

/// The eight i32 lanes, for the batched steps of [`batched`].
#[inline(always)]
unsafe fn lane_array(v: __m256i) -> [i32; 8] {
    let mut l = [0i32; 8];
    _mm256_storeu_si256(l.as_mut_ptr().cast(), v);
    l
}

/// Signed bytes times signed bytes, summed in pairs (`mul_add_epi8` of llama.cpp).
#[inline(always)]
unsafe fn mul_add_epi8(x: __m256i, y: __m256i) -> __m256i {
    _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

#[inline(always)]
unsafe fn iq4_xs_lanes(x: &[u8], y: &[u8]) -> __m256i {
    let values = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast());
    let m4 = _mm_set1_epi8(0x0F);
    let (qs, q8) = (x[8..136].as_ptr(), y[4..260].as_ptr());
    let mut sum = _mm256_setzero_si256();
    for g in 0..8 {
        let bits = _mm_loadu_si128(qs.add(16 * g).cast());
        let w = _mm256_set_m128i(
            _mm_shuffle_epi8(values, _mm_and_si128(_mm_srli_epi16(bits, 4), m4)),
            _mm_shuffle_epi8(values, _mm_and_si128(bits, m4)),
        );
        let p16 = mul_add_epi8(w, _mm256_loadu_si256(q8.add(32 * g).cast()));
        let ls = crate::engine::quant::dequant::iq4_xs_scale(x, g) - 32;
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(p16, _mm256_set1_epi16(ls as i16)));
    }
    sum
}

#[inline(always)]
unsafe fn q6_k_lanes(x: &[u8], y: &[u8]) -> __m256i {
    let (m3, m15) = (_mm256_set1_epi8(3), _mm256_set1_epi8(15));
    let sc = |i: usize| x[192 + i] as i8 as i16;
    let q8 = y[4..260].as_ptr();
    let mut sum = _mm256_setzero_si256();
    for half in 0..2 {
        let ql1 = _mm256_loadu_si256(x.as_ptr().add(64 * half).cast());
        let ql2 = _mm256_loadu_si256(x.as_ptr().add(64 * half + 32).cast());
        let qh = _mm256_loadu_si256(x.as_ptr().add(128 + 32 * half).cast());
        let q = [
            _mm256_or_si256(
                _mm256_and_si256(ql1, m15),
                _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4),
            ),
            _mm256_or_si256(
                _mm256_and_si256(ql2, m15),
                _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(12)), 2),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m15),
                _mm256_and_si256(qh, _mm256_set1_epi8(48)),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(ql2, 4), m15),
                _mm256_srli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(-64)), 2),
            ),
        ];
        for (v, q) in q.into_iter().enumerate() {
            let p16 =
                _mm256_maddubs_epi16(q, _mm256_loadu_si256(q8.add(128 * half + 32 * v).cast()));
            let s = 8 * half + 2 * v;
            let scales = _mm256_set_m128i(_mm_set1_epi16(sc(s + 1)), _mm_set1_epi16(sc(s)));
            sum = _mm256_add_epi32(sum, _mm256_madd_epi16(scales, p16));
        }
    }
    // The quants were taken unsigned (0..63): take off 32 * scale * bsum per 16 elements.
    let bsums = _mm256_loadu_si256(y[260..292].as_ptr().cast());
    let scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(x[192..208].as_ptr().cast()));
    _mm256_sub_epi32(
        sum,
        _mm256_slli_epi32(_mm256_madd_epi16(bsums, scales16), 5),
    )
}

/// Q5_K: the lane sums and the exact minimum term.
#[inline(always)]
unsafe fn q5_k_lanes(x: &[u8], y: &[u8]) -> (__m256i, i32) {
    let scales = &x[4..16];
    let m4 = _mm256_set1_epi8(0x0F);
    let hbits = _mm256_loadu_si256(x[16..48].as_ptr().cast());
    let (qs, q8) = (x[48..176].as_ptr(), y[4..260].as_ptr());
    let mut sum = _mm256_setzero_si256();
    for j in 0..4 {
        let bits = _mm256_loadu_si256(qs.add(32 * j).cast());
        for (half, lo) in [
            _mm256_and_si256(bits, m4),
            _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4),
        ]
        .into_iter()
        .enumerate()
        {
            let g = 2 * j + half;
            let hmask = _mm256_set1_epi8(1 << g);
            let hi = _mm256_slli_epi16(
                _mm256_srl_epi16(_mm256_and_si256(hbits, hmask), _mm_cvtsi32_si128(g as i32)),
                4,
            );
            let q5 = _mm256_add_epi8(lo, hi);
            let p16 = _mm256_maddubs_epi16(q5, _mm256_loadu_si256(q8.add(32 * g).cast()));
            let sc = k_scale_min(g, scales).0 as i16;
            sum = _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_set1_epi16(sc), p16));
        }
    }
    (sum, k_mins(x, y))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q5_k(w: &[u8], a: &[u8], n: usize) -> f32 {
    let (mut acc, mut summs) = (_mm256_setzero_ps(), 0.0f32);
    for (x, y) in blocks(w, a, n, 176) {
        let (lanes, mins) = q5_k_lanes(x, y);
        summs = (mins as f32).mul_add(-q8k_d(y) * f16_at(x, 2), summs);
        acc = _mm256_fmadd_ps(
            _mm256_set1_ps(q8k_d(y) * f16_at(x, 0)),
            _mm256_cvtepi32_ps(lanes),
            acc,
        );
    }
    hsum8(acc) + summs
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q6_k(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (x, y) in blocks(w, a, n, 210) {
        acc = _mm256_fmadd_ps(
            _mm256_set1_ps(q8k_d(y) * f16_at(x, 208)),
            _mm256_cvtepi32_ps(q6_k_lanes(x, y)),
            acc,
        );
    }
    hsum8(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn iq4_xs(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (x, y) in blocks(w, a, n, 136) {
        acc = _mm256_fmadd_ps(
            _mm256_set1_ps(f16_at(x, 0) * q8k_d(y)),
            _mm256_cvtepi32_ps(iq4_xs_lanes(x, y)),
            acc,
        );
    }
    hsum8(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q5_k_batched(w: &[u8], a: &[u8], n: usize) -> f32 {
    batched(w, a, n, 176, |x, y| {
        let (lanes, mins) = q5_k_lanes(x, y);
        (f16_at(x, 0), Some((f16_at(x, 2), mins)), lane_array(lanes))
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q6_k_batched(w: &[u8], a: &[u8], n: usize) -> f32 {
    batched(w, a, n, 210, |x, y| {
        (f16_at(x, 208), None, lane_array(q6_k_lanes(x, y)))
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn iq4_xs_batched(w: &[u8], a: &[u8], n: usize) -> f32 {
    batched(w, a, n, 136, |x, y| {
        (f16_at(x, 0), None, lane_array(iq4_xs_lanes(x, y)))
    })
}
