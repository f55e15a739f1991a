//! Hand-written x86 kernels for the formats on the hot path of the default model (Q4_1
//! weights against Q8_1 activations, Q8_0 against Q8_0). They keep the lane order of
//! [`crate::engine::quant::lanes`] exactly: lane `j` of the 8-lane accumulator takes the
//! integer sum of elements `4j..4j+4` of each block, and the final horizontal sum is
//! llama.cpp's. So they equal the scalar reference bit for bit (a unit test checks).
//!
//! The VNNI variants replace `maddubs + madd` with one `vpdpbusd`; the integer sums, and so
//! the results, are the same.

use std::arch::x86_64::*;


/// Two adjacent f16 values (a block's scale and its min or sum) as f32, with F16C.
#[inline(always)]
unsafe fn f16_pair(p: *const u8) -> (f32, f32) {
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(p.cast::<i32>().read_unaligned()));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

#[inline(always)]
unsafe fn hsum8(acc: __m256) -> f32 {
    let r = _mm_add_ps(_mm256_extractf128_ps(acc, 1), _mm256_castps256_ps128(acc));
    let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    let r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

/// The 32 nibbles of a block as bytes: low nibbles in bytes 0..16, high ones in 16..32.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let tmp = _mm_loadu_si128(p.cast());
    let both = _mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// Sums of 4 adjacent products of unsigned `x` and signed `y` bytes, as 8 f32 lanes.
#[inline(always)]
unsafe fn lane_sums_avx2(x: __m256i, y: __m256i) -> __m256 {
    let pairs = _mm256_maddubs_epi16(x, y);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

#[inline(always)]
unsafe fn lane_sums_vnni(x: __m256i, y: __m256i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), x, y))
}

macro_rules! block_kernels {
    ($q4_1:ident, $q8_0:ident, $features:literal, $lane_sums:ident) => {
        #[target_feature(enable = $features)]
        pub unsafe fn $q4_1(w: &[u8], a: &[u8], n: usize) -> f32 {
            let nb = n / 32;
            assert!(w.len() >= nb * 20 && a.len() >= nb * 36);
            let mut acc = _mm256_setzero_ps();
            let mut summs = 0.0f32;
            for ib in 0..nb {
                let (x, y) = (&w[ib * 20..], &a[ib * 36..]);
                let (dx, m) = f16_pair(x.as_ptr());
                let (dy, sy) = f16_pair(y.as_ptr());
                summs = m.mul_add(sy, summs);
                let d = _mm256_set1_ps(dx * dy);
                let qx = nibbles(x.as_ptr().add(4));
                let qy = _mm256_loadu_si256(y.as_ptr().add(4).cast());
                acc = _mm256_fmadd_ps(d, $lane_sums(qx, qy), acc);
            }
            hsum8(acc) + summs
        }

        #[target_feature(enable = $features)]
        pub unsafe fn $q8_0(w: &[u8], a: &[u8], n: usize) -> f32 {
            let nb = n / 32;
            assert!(w.len() >= nb * 34 && a.len() >= nb * 34);
            let mut acc = _mm256_setzero_ps();
            for ib in 0..nb {
                let (x, y) = (&w[ib * 34..], &a[ib * 34..]);
                let d = _mm256_set1_ps(f16_pair(x.as_ptr()).0 * f16_pair(y.as_ptr()).0);
                let qx = _mm256_loadu_si256(x.as_ptr().add(2).cast());
                let qy = _mm256_loadu_si256(y.as_ptr().add(2).cast());
                // |x| times y with x's sign: unsigned-by-signed products equal x * y.
                let ax = _mm256_sign_epi8(qx, qx);
                let sy = _mm256_sign_epi8(qy, qx);
                acc = _mm256_fmadd_ps(d, $lane_sums(ax, sy), acc);
            }
            hsum8(acc)
        }
    };
}

block_kernels!(q4_1_avx2, q8_0_avx2, "avx2,fma,f16c", lane_sums_avx2);
block_kernels!(q4_1_vnni, q8_0_vnni, "avx2,fma,f16c,avx512f,avx512vl,avx512vnni", lane_sums_vnni);

/// Four consecutive rows at once: four independent accumulator chains hide the fused
/// multiply-add latency, and each activation block is loaded once. Every row's own
/// arithmetic is exactly the one-row kernel's.
macro_rules! four_row_kernels {
    ($q4_1:ident, $q8_0:ident, $features:literal, $lane_sums:ident) => {
        #[target_feature(enable = $features)]
        pub unsafe fn $q4_1(w: &[u8], a: &[u8], n: usize, out: &mut [f32; 4]) {
            let nb = n / 32;
            let rb = nb * 20;
            assert!(w.len() >= 4 * rb && a.len() >= nb * 36);
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut summs = [0.0f32; 4];
            for ib in 0..nb {
                let y = a.as_ptr().add(ib * 36);
                let (dy, sy) = f16_pair(y);
                let qy = _mm256_loadu_si256(y.add(4).cast());
                for r in 0..4 {
                    let x = w.as_ptr().add(r * rb + ib * 20);
                    let (dx, m) = f16_pair(x);
                    summs[r] = m.mul_add(sy, summs[r]);
                    acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dx * dy), $lane_sums(nibbles(x.add(4)), qy), acc[r]);
                }
            }
            for r in 0..4 {
                out[r] = hsum8(acc[r]) + summs[r];
            }
        }

        #[target_feature(enable = $features)]
        pub unsafe fn $q8_0(w: &[u8], a: &[u8], n: usize, out: &mut [f32; 4]) {
            let nb = n / 32;
            let rb = nb * 34;
            assert!(w.len() >= 4 * rb && a.len() >= nb * 34);
            let mut acc = [_mm256_setzero_ps(); 4];
            for ib in 0..nb {
                let y = a.as_ptr().add(ib * 34);
                let dy = f16_pair(y).0;
                let qy = _mm256_loadu_si256(y.add(2).cast());
                for r in 0..4 {
                    let x = w.as_ptr().add(r * rb + ib * 34);
                    let qx = _mm256_loadu_si256(x.add(2).cast());
                    let d = _mm256_set1_ps(f16_pair(x).0 * dy);
                    acc[r] = _mm256_fmadd_ps(d, $lane_sums(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(qy, qx)), acc[r]);
                }
            }
            for r in 0..4 {
                out[r] = hsum8(acc[r]);
            }
        }
    };
}

four_row_kernels!(q4_1_avx2_x4, q8_0_avx2_x4, "avx2,fma,f16c", lane_sums_avx2);
four_row_kernels!(q4_1_vnni_x4, q8_0_vnni_x4, "avx2,fma,f16c,avx512f,avx512vl,avx512vnni", lane_sums_vnni);
