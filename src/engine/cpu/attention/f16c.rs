//! The f16 mode of attention ([`super::half`]) with F16C and AVX2 intrinsics: the same
//! arithmetic, eight lanes at a time. Rounding through `vcvtps2ph` (round to nearest even)
//! equals the scalar path's software rounding, and the key dot keeps ggml's AVX-512
//! `vec_dot_f16` order, so results are bit-identical (a unit test compares the two).

use std::arch::x86_64::*;

/// Whether the fast path takes this head shape.
pub fn applies(dk: usize, dv: usize) -> bool {
    dk.is_multiple_of(64) && dv.is_multiple_of(8)
}

#[inline(always)]
unsafe fn round_f16(x: __m256) -> __m256 {
    _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x))
}

/// `k · q` in `vec_dot_f16`'s order: four 16-lane accumulators (two registers each) over
/// 64-element steps, folded (0+2, 1+3, 0+1), then halves, quarters and the last pairs.
#[inline(always)]
unsafe fn dot(k: *const f32, q: *const f32, n: usize) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 8];
    for i in (0..n).step_by(64) {
        for (j, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(
                _mm256_loadu_ps(k.add(i + 8 * j)),
                _mm256_loadu_ps(q.add(i + 8 * j)),
                *a,
            );
        }
    }
    // Accumulator j of ggml is our registers 2j (lanes 0..8) and 2j + 1 (lanes 8..16).
    let lo = _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6]));
    let hi = _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7]));
    let t3 = _mm256_add_ps(hi, lo);
    let t6 = _mm_add_ps(_mm256_extractf128_ps(t3, 1), _mm256_castps256_ps128(t3));
    let pairs = _mm_add_ps(t6, _mm_movehl_ps(t6, t6));
    _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs)))
}

/// One query row (already rounded to f16) against `n_ctx` cache rows; `k` and `v` point at
/// the first row of this KV head and advance by `k_row` / `v_row` floats per position.
/// Continues the running maximum and sum in `state` and the unnormalised values in `acc`,
/// so a cache walked block by block is one chain of arithmetic.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `k`, `v` must hold `n_ctx` rows; `qh.len()` is
/// the key width and `acc.len()` the value width, as [`applies`] requires.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn attend(
    qh: &[f32],
    k: *const f32,
    k_row: usize,
    v: *const f32,
    v_row: usize,
    n_ctx: usize,
    acc: &mut [f32],
    state: &mut (f32, f32),
) {
    let (dk, dv) = (qh.len(), acc.len());
    let scale = 1.0 / (dk as f32).sqrt();
    let a = acc.as_mut_ptr();
    let (mut m, mut sum) = *state;
    for ic in 0..n_ctx {
        let sc = dot(k.add(ic * k_row), qh.as_ptr(), dk) * scale;
        let (mut ms, mut vs) = (1.0f32, 1.0f32);
        if sc > m {
            ms = (m - sc).exp();
            m = sc;
            let s = _mm256_set1_ps(ms);
            for i in (0..dv).step_by(8) {
                _mm256_storeu_ps(
                    a.add(i),
                    round_f16(_mm256_mul_ps(_mm256_loadu_ps(a.add(i)), s)),
                );
            }
        } else {
            vs = (sc - m).exp();
        }
        let s = _mm256_set1_ps(vs);
        let vr = v.add(ic * v_row);
        for i in (0..dv).step_by(8) {
            let x = _mm256_fmadd_ps(_mm256_loadu_ps(vr.add(i)), s, _mm256_loadu_ps(a.add(i)));
            _mm256_storeu_ps(a.add(i), round_f16(x));
        }
        sum = sum.mul_add(ms, vs);
    }
    *state = (m, sum);
}
