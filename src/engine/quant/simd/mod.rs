//! Run-time selection of dot-product kernels by CPU feature.
//!
//! Detection happens once; `SUPERNET_SIMD=scalar|avx2|avx512` caps the level (for tests
//! and for comparing paths). Formats without a SIMD kernel at a level use the scalar one.

use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_k;

use super::{scalar_dot, scalar_dot_batched, GgmlType, BATCHED_FROM};

/// Dot products of one interleaved group of four weight rows (see
/// [`super::interleave`]) with `n_tok` activation rows of `a_row` bytes each:
/// `out[t * 4 + r]` is row `r` against token `t`.
pub type InterleavedFn =
    fn(w: &[u8], a: &[u8], a_row: usize, n_tok: usize, n: usize, out: &mut [f32]);

/// A dot product of one weight row (its own type) with one activation row (its partner
/// type) of `n` elements.
pub type DotFn = fn(w: &[u8], a: &[u8], n: usize) -> f32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    Scalar,
    Avx2,
    Avx512Vnni,
}

impl SimdLevel {
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Avx2 => "avx2",
            Self::Avx512Vnni => "avx512-vnni",
        }
    }

    /// The best level this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            let avx512 = avx2
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni");
            if avx512 {
                return Self::Avx512Vnni;
            }
            if avx2 {
                return Self::Avx2;
            }
        }
        Self::Scalar
    }
}

pub struct Kernels {
    pub level: SimdLevel,
}

impl Kernels {
    /// Kernels at `level`, or at the best supported level if `level` is not available.
    pub fn at_most(level: SimdLevel) -> Self {
        Self {
            level: level.min(SimdLevel::detect()),
        }
    }

    /// The dot product for weights of type `ty` (which must be supported).
    pub fn dot(&self, ty: GgmlType) -> DotFn {
        #[cfg(target_arch = "x86_64")]
        if let Some(f) = x86_fn(self.level, ty) {
            return f;
        }
        if self.level >= SimdLevel::Avx2 {
            if let Some(f) = fma_fn(ty) {
                return f;
            }
        }
        scalar_fn(ty)
    }

    /// The dot product for a matmul of `n_tokens` activation rows by a `rows`-row weight:
    /// [`Kernels::dot`], or the arithmetic llama.cpp switches to for batches: for
    /// [`BATCHED_FROM`] rows and more that of [`scalar_dot_batched`] (K-quants), and for
    /// F32 weights of a multiple of 4 rows, from 2 activation rows, tinyBLAS's.
    pub fn dot_for(&self, ty: GgmlType, n_tokens: usize, rows: usize) -> DotFn {
        if ty == GgmlType::F32 && n_tokens >= 2 && rows.is_multiple_of(4) {
            return |w, a, n| scalar_dot_batched(GgmlType::F32, w, a, n);
        }
        if n_tokens < BATCHED_FROM {
            return self.dot(ty);
        }
        #[cfg(target_arch = "x86_64")]
        if self.level >= SimdLevel::Avx2 {
            match ty {
                GgmlType::Q5K => return q5_k_batched_avx2,
                GgmlType::Q6K => return q6_k_batched_avx2,
                GgmlType::IQ4XS => return iq4_xs_batched_avx2,
                _ => {}
            }
        }
        match ty {
            GgmlType::Q5K => |w, a, n| scalar_dot_batched(GgmlType::Q5K, w, a, n),
            GgmlType::Q6K => |w, a, n| scalar_dot_batched(GgmlType::Q6K, w, a, n),
            GgmlType::IQ4XS => |w, a, n| scalar_dot_batched(GgmlType::IQ4XS, w, a, n),
            _ => self.dot(ty),
        }
    }

    /// The kernel for interleaved groups of `ty`, where one exists at this level; weights
    /// are only interleaved when it does. Each row's result equals [`Kernels::dot`]'s.
    pub fn interleaved(&self, ty: GgmlType) -> Option<InterleavedFn> {
        #[cfg(target_arch = "x86_64")]
        return x86_interleaved(self.level, ty);
        #[cfg(not(target_arch = "x86_64"))]
        None
    }
}

/// Declares safe wrappers that run a lane-exact kernel compiled with AVX2 and FMA enabled.
/// They are only handed out by [`Kernels::dot`] when detection found those features.
macro_rules! fma_kernels {
    ($($name:ident => $kernel:path),* $(,)?) => {
        $(
            fn $name(w: &[u8], a: &[u8], n: usize) -> f32 {
                #[cfg(target_arch = "x86_64")]
                #[target_feature(enable = "avx2,fma,f16c")]
                unsafe fn inner(w: &[u8], a: &[u8], n: usize) -> f32 {
                    $kernel(w, a, n)
                }
                #[cfg(target_arch = "x86_64")]
                // SAFETY: reachable only through `Kernels::dot` at level >= Avx2, which
                // requires the CPU to report avx2, fma and f16c.
                return unsafe { inner(w, a, n) };
                #[cfg(not(target_arch = "x86_64"))]
                $kernel(w, a, n)
            }
        )*
    };
}

fma_kernels! {
    q4_0_fma => super::lanes::q4_0,
    q4_1_fma => super::lanes::q4_1,
    q5_0_fma => super::lanes::q5_0,
    q5_1_fma => super::lanes::q5_1,
    q8_0_fma => super::lanes::q8_0,
    q4_k_fma => super::lanes_k::q4_k,
}

/// Declares safe wrappers around the hand-written x86 kernels of one feature level.
#[cfg(target_arch = "x86_64")]
macro_rules! x86_wrappers {
    ($($name:ident => $kernel:path),* $(,)?) => {
        $(
            fn $name(w: &[u8], a: &[u8], n: usize) -> f32 {
                // SAFETY: handed out by `x86_fn` only at a level whose features were detected.
                unsafe { $kernel(w, a, n) }
            }
        )*
    };
}

#[cfg(target_arch = "x86_64")]
x86_wrappers! {
    q4_1_avx2 => x86::q4_1_avx2,
    q8_0_avx2 => x86::q8_0_avx2,
    q4_1_vnni => x86::q4_1_vnni,
    q8_0_vnni => x86::q8_0_vnni,
    q5_k_avx2 => x86_k::q5_k,
    q6_k_avx2 => x86_k::q6_k,
    iq4_xs_avx2 => x86_k::iq4_xs,
    f16_avx2 => x86::f16_f16c,
    q5_k_batched_avx2 => x86_k::q5_k_batched,
    q6_k_batched_avx2 => x86_k::q6_k_batched,
    iq4_xs_batched_avx2 => x86_k::iq4_xs_batched,
}

#[cfg(target_arch = "x86_64")]
macro_rules! x86_interleaved_wrappers {
    ($($name:ident => $kernel:path),* $(,)?) => {
        $(
            fn $name(w: &[u8], a: &[u8], a_row: usize, n_tok: usize, n: usize, out: &mut [f32]) {
                // SAFETY: handed out by `x86_interleaved` only at a level whose features were
                // detected; the kernel checks the slice bounds.
                unsafe { $kernel(w, a, a_row, n_tok, n, out) }
            }
        )*
    };
}

#[cfg(target_arch = "x86_64")]
x86_interleaved_wrappers! {
    q4_1_avx2_x4 => x86::q4_1_avx2_x4,
    q8_0_avx2_x4 => x86::q8_0_avx2_x4,
    q4_1_vnni_x4 => x86::q4_1_vnni_x4,
    q8_0_vnni_x4 => x86::q8_0_vnni_x4,
}

#[cfg(target_arch = "x86_64")]
fn x86_interleaved(level: SimdLevel, ty: GgmlType) -> Option<InterleavedFn> {
    Some(match (level, ty) {
        (SimdLevel::Avx512Vnni, GgmlType::Q4_1) => q4_1_vnni_x4,
        (SimdLevel::Avx512Vnni, GgmlType::Q8_0) => q8_0_vnni_x4,
        (SimdLevel::Avx2, GgmlType::Q4_1) => q4_1_avx2_x4,
        (SimdLevel::Avx2, GgmlType::Q8_0) => q8_0_avx2_x4,
        _ => return None,
    })
}

#[cfg(target_arch = "x86_64")]
fn x86_fn(level: SimdLevel, ty: GgmlType) -> Option<DotFn> {
    Some(match (level, ty) {
        (SimdLevel::Avx512Vnni, GgmlType::Q4_1) => q4_1_vnni,
        (SimdLevel::Avx512Vnni, GgmlType::Q8_0) => q8_0_vnni,
        (SimdLevel::Avx2, GgmlType::Q4_1) => q4_1_avx2,
        (SimdLevel::Avx2, GgmlType::Q8_0) => q8_0_avx2,
        (SimdLevel::Avx2 | SimdLevel::Avx512Vnni, GgmlType::Q5K) => q5_k_avx2,
        (SimdLevel::Avx2 | SimdLevel::Avx512Vnni, GgmlType::Q6K) => q6_k_avx2,
        (SimdLevel::Avx2 | SimdLevel::Avx512Vnni, GgmlType::IQ4XS) => iq4_xs_avx2,
        (SimdLevel::Avx2 | SimdLevel::Avx512Vnni, GgmlType::F16) => f16_avx2,
        _ => return None,
    })
}

fn fma_fn(ty: GgmlType) -> Option<DotFn> {
    Some(match ty {
        GgmlType::Q4_0 => q4_0_fma,
        GgmlType::Q4_1 => q4_1_fma,
        GgmlType::Q5_0 => q5_0_fma,
        GgmlType::Q5_1 => q5_1_fma,
        GgmlType::Q8_0 => q8_0_fma,
        GgmlType::Q4K => q4_k_fma,
        _ => return None,
    })
}

fn scalar_fn(ty: GgmlType) -> DotFn {
    match ty {
        GgmlType::F32 => |w, a, n| scalar_dot(GgmlType::F32, w, a, n),
        GgmlType::F16 => |w, a, n| scalar_dot(GgmlType::F16, w, a, n),
        GgmlType::BF16 => |w, a, n| scalar_dot(GgmlType::BF16, w, a, n),
        GgmlType::Q4_0 => |w, a, n| scalar_dot(GgmlType::Q4_0, w, a, n),
        GgmlType::Q4_1 => |w, a, n| scalar_dot(GgmlType::Q4_1, w, a, n),
        GgmlType::Q5_0 => |w, a, n| scalar_dot(GgmlType::Q5_0, w, a, n),
        GgmlType::Q5_1 => |w, a, n| scalar_dot(GgmlType::Q5_1, w, a, n),
        GgmlType::Q8_0 => |w, a, n| scalar_dot(GgmlType::Q8_0, w, a, n),
        GgmlType::Q4K => |w, a, n| scalar_dot(GgmlType::Q4K, w, a, n),
        GgmlType::Q5K => |w, a, n| scalar_dot(GgmlType::Q5K, w, a, n),
        GgmlType::Q6K => |w, a, n| scalar_dot(GgmlType::Q6K, w, a, n),
        GgmlType::IQ4XS => |w, a, n| scalar_dot(GgmlType::IQ4XS, w, a, n),
        GgmlType::Unsupported(_) => unreachable!("callers check is_supported"),
    }
}

/// The process-wide kernels: the best level, capped by `SUPERNET_SIMD` if set.
pub fn kernels() -> &'static Kernels {
    static K: OnceLock<Kernels> = OnceLock::new();
    K.get_or_init(|| {
        let cap = match std::env::var("SUPERNET_SIMD").as_deref() {
            Ok("scalar") => SimdLevel::Scalar,
            Ok("avx2") => SimdLevel::Avx2,
            _ => SimdLevel::Avx512Vnni,
        };
        Kernels::at_most(cap)
    })
}
