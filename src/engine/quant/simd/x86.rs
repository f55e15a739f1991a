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

/// llama.cpp's `hsum_float_8`.
#[inline(always)]
pub(super) unsafe fn hsum8(acc: __m256) -> f32 {
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
block_kernels!(
    q4_1_vnni,
    q8_0_vnni,
    "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
    lane_sums_vnni
);

/// How far ahead of the current block the interleaved kernels prefetch weights, in bytes:
/// about two hundred nanoseconds of streaming, the latency of memory on our machines.
/// Prefetching past the end of a group is harmless (prefetches never fault).
const PREFETCH: usize = 4096;

/// Four rows of an interleaved group (see [`crate::engine::quant::interleave`]) against
/// `n_tok` activation rows, in tiles of `$tile` tokens: each group block is unpacked once
/// per tile, and 4 x `$tile` independent accumulator chains hide the multiply-add latency.
/// Every row's arithmetic is exactly the one-row kernel's. Writes `out[t * 4 + r]`.
macro_rules! interleaved_kernels {
    ($q4_1:ident, $q8_0:ident, $features:literal, $lane_sums:ident, $tile:literal) => {
        #[target_feature(enable = $features)]
        pub unsafe fn $q4_1(
            w: &[u8],
            a: &[u8],
            a_row: usize,
            n_tok: usize,
            n: usize,
            out: &mut [f32],
        ) {
            #[target_feature(enable = $features)]
            unsafe fn tile<const T: usize>(
                w: *const u8,
                a: *const u8,
                a_row: usize,
                nb: usize,
                out: *mut f32,
            ) {
                let mask = _mm256_set1_epi8(0x0F);
                let mut acc = [[_mm256_setzero_ps(); 4]; T];
                let mut summs = [_mm256_setzero_ps(); T];
                for ib in 0..nb {
                    let g = w.add(ib * 80);
                    _mm_prefetch::<_MM_HINT_T0>(g.wrapping_add(PREFETCH).cast());
                    // d0 m0 d1 m1 d2 m2 d3 m3
                    let hdr = _mm256_cvtph_ps(_mm_loadu_si128(g.cast()));
                    let q01 = _mm256_loadu_si256(g.add(16).cast());
                    let q23 = _mm256_loadu_si256(g.add(48).cast());
                    let x = [
                        _mm256_and_si256(q01, mask),
                        _mm256_and_si256(_mm256_srli_epi16(q01, 4), mask),
                        _mm256_and_si256(q23, mask),
                        _mm256_and_si256(_mm256_srli_epi16(q23, 4), mask),
                    ];
                    for t in 0..T {
                        let y = a.add(t * a_row + ib * 36);
                        let (dy, sy) = f16_pair(y);
                        let qy = _mm256_loadu_si256(y.add(4).cast());
                        // Odd lanes: m_r * sy + summs_r, the one-row kernel's fused step.
                        summs[t] = _mm256_fmadd_ps(hdr, _mm256_set1_ps(sy), summs[t]);
                        let d = _mm256_mul_ps(hdr, _mm256_set1_ps(dy));
                        for r in 0..4 {
                            let dr = _mm256_permutevar8x32_ps(d, _mm256_set1_epi32(2 * r as i32));
                            acc[t][r] = _mm256_fmadd_ps(dr, $lane_sums(x[r], qy), acc[t][r]);
                        }
                    }
                }
                for t in 0..T {
                    let mut s = [0.0f32; 8];
                    _mm256_storeu_ps(s.as_mut_ptr(), summs[t]);
                    for r in 0..4 {
                        *out.add(t * 4 + r) = hsum8(acc[t][r]) + s[2 * r + 1];
                    }
                }
            }
            let nb = n / 32;
            interleaved_tiles!(tile, w, a, a_row, n_tok, out, nb, 80, 36, $tile);
        }

        #[target_feature(enable = $features)]
        pub unsafe fn $q8_0(
            w: &[u8],
            a: &[u8],
            a_row: usize,
            n_tok: usize,
            n: usize,
            out: &mut [f32],
        ) {
            #[target_feature(enable = $features)]
            unsafe fn tile<const T: usize>(
                w: *const u8,
                a: *const u8,
                a_row: usize,
                nb: usize,
                out: *mut f32,
            ) {
                let mut acc = [[_mm256_setzero_ps(); 4]; T];
                for ib in 0..nb {
                    let g = w.add(ib * 136);
                    _mm_prefetch::<_MM_HINT_T0>(g.wrapping_add(PREFETCH).cast());
                    _mm_prefetch::<_MM_HINT_T0>(g.wrapping_add(PREFETCH + 64).cast());
                    // d0 d1 d2 d3 in lanes 0..4 (the upper lanes read quants and are unused).
                    let hdr = _mm256_cvtph_ps(_mm_loadu_si128(g.cast()));
                    let x: [__m256i; 4] =
                        std::array::from_fn(|r| _mm256_loadu_si256(g.add(8 + 32 * r).cast()));
                    let ax = x.map(|x| _mm256_sign_epi8(x, x));
                    for t in 0..T {
                        let y = a.add(t * a_row + ib * 34);
                        let qy = _mm256_loadu_si256(y.add(2).cast());
                        let d = _mm256_mul_ps(hdr, _mm256_set1_ps(f16_pair(y).0));
                        for r in 0..4 {
                            let dr = _mm256_permutevar8x32_ps(d, _mm256_set1_epi32(r as i32));
                            // |x| times y with x's sign: unsigned-by-signed products equal x * y.
                            acc[t][r] = _mm256_fmadd_ps(
                                dr,
                                $lane_sums(ax[r], _mm256_sign_epi8(qy, x[r])),
                                acc[t][r],
                            );
                        }
                    }
                }
                for t in 0..T {
                    for r in 0..4 {
                        *out.add(t * 4 + r) = hsum8(acc[t][r]);
                    }
                }
            }
            let nb = n / 32;
            interleaved_tiles!(tile, w, a, a_row, n_tok, out, nb, 136, 34, $tile);
        }
    };
}

/// Checks the bounds once, then covers `n_tok` tokens with full tiles and one short tile.
macro_rules! interleaved_tiles {
    ($tile_fn:ident, $w:ident, $a:ident, $a_row:ident, $n_tok:ident, $out:ident, $nb:ident, $group_block:literal, $act_block:literal, $tile:literal) => {{
        if $n_tok == 0 {
            return;
        }
        assert!($w.len() >= $nb * $group_block);
        assert!($a.len() >= ($n_tok - 1) * $a_row + $nb * $act_block);
        assert!($out.len() >= $n_tok * 4);
        let (w, a, out) = ($w.as_ptr(), $a.as_ptr(), $out.as_mut_ptr());
        let mut t = 0;
        while $n_tok - t >= $tile {
            $tile_fn::<$tile>(w, a.add(t * $a_row), $a_row, $nb, out.add(t * 4));
            t += $tile;
        }
        let (a, out) = (a.add(t * $a_row), out.add(t * 4));
        match $n_tok - t {
            0 => {}
            1 => $tile_fn::<1>(w, a, $a_row, $nb, out),
            2 => $tile_fn::<2>(w, a, $a_row, $nb, out),
            _ => $tile_fn::<3>(w, a, $a_row, $nb, out),
        }
    }};
}

interleaved_kernels!(
    q4_1_avx2_x4,
    q8_0_avx2_x4,
    "avx2,fma,f16c",
    lane_sums_avx2,
    2
);
interleaved_kernels!(
    q4_1_vnni_x4,
    q8_0_vnni_x4,
    "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
    lane_sums_vnni,
    4
);

/// [`crate::engine::quant::lanes::f16`] with F16C conversions: each 16-lane accumulator of
/// ggml's order is two 8-lane halves, so the sums are the same, bit for bit.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16_f16c(w: &[u8], a: &[u8], n: usize) -> f32 {
    let np = n / 64 * 64;
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let load = |p: *const u8, e: usize| _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * e).cast()));
    let mut acc = [_mm256_setzero_ps(); 8];
    for i in (0..np).step_by(64) {
        for (h, acc) in acc.iter_mut().enumerate() {
            let e = i + 8 * h;
            *acc = _mm256_fmadd_ps(load(wp, e), load(ap, e), *acc);
        }
    }
    let mut lanes = [[0.0f32; 8]; 8];
    for (l, acc) in lanes.iter_mut().zip(acc) {
        _mm256_storeu_ps(l.as_mut_ptr(), acc);
    }
    // Accumulator j of ggml's four is halves 2j (lanes 0..8) and 2j+1 (lanes 8..16).
    let acc16: [[f32; 16]; 4] =
        std::array::from_fn(|j| std::array::from_fn(|l| lanes[2 * j + l / 8][l % 8]));
    let mut sum = crate::engine::cpu::ops::fold_reduce(&acc16) as f64;
    for e in np..n {
        let h = |b: &[u8]| {
            half::f16::from_bits(u16::from_le_bytes([b[2 * e], b[2 * e + 1]])).to_f32_const()
        };
        sum += (h(w) * h(a)) as f64;
    }
    sum as f32
}
