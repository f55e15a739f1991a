//! Tensor element types of GGUF files: block layouts, dequantization, and dot products of
//! quantized weight rows against quantized activations.
//!
//! We follow llama.cpp's arithmetic on purpose: activations entering a quantized matmul are
//! quantized to the weight type's "vec-dot" partner (Q8_0, Q8_1 or Q8_K), the integer dot of
//! each block is exact, and only the per-block scaling is floating point. That is what makes
//! our greedy output token-identical to llama.cpp's.
//!
//! `dequant` and `dot` hold the scalar reference of every format; `simd` holds the AVX2 and
//! AVX-512 VNNI paths, picked once at run time by [`kernels`].

mod activation;
mod dequant;
mod dot;
pub mod interleave;
mod lanes;
mod lanes_k;
mod simd;

pub use activation::{quantize_activations, ActType};
pub use dequant::dequantize_row;
pub use dot::{scalar_dot, scalar_dot_batched, BATCHED_FROM};
pub use simd::{kernels, DotFn, InterleavedFn, Kernels};

/// Element types that appear in GGUF tensors, with ggml's numeric ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
    IQ4XS,
    /// Recognised in tensor tables but not computable by this engine.
    Unsupported(u32),
}

/// Names of ggml type ids we recognise but cannot compute with, for clear errors.
const UNSUPPORTED_NAMES: &[(u32, &str)] = &[
    (9, "Q8_1"),
    (10, "Q2_K"),
    (11, "Q3_K"),
    (15, "Q8_K"),
    (16, "IQ2_XXS"),
    (17, "IQ2_XS"),
    (18, "IQ3_XXS"),
    (19, "IQ1_S"),
    (20, "IQ4_NL"),
    (21, "IQ3_S"),
    (22, "IQ2_S"),
    (24, "I8"),
    (25, "I16"),
    (26, "I32"),
    (27, "I64"),
    (28, "F64"),
    (29, "IQ1_M"),
    (34, "TQ1_0"),
    (35, "TQ2_0"),
    (39, "MXFP4"),
];

/// Block geometry of the types we do not compute with, so the tensor table of a file that
/// holds them still parses (the error comes when a model asks for such a tensor).
fn unsupported_geometry(id: u32) -> (usize, usize) {
    match id {
        9 => (32, 36),
        10 => (256, 84),
        11 => (256, 110),
        15 => (256, 292),
        16 => (256, 66),
        17 => (256, 74),
        18 => (256, 98),
        19 => (256, 50),
        20 => (32, 18),
        21 => (256, 110),
        22 => (256, 82),
        24 => (1, 1),
        25 => (1, 2),
        26 => (1, 4),
        27 => (1, 8),
        28 => (1, 8),
        29 => (256, 56),
        34 => (256, 54),
        35 => (256, 66),
        39 => (32, 17),
        _ => (1, 1),
    }
}

impl GgmlType {
    /// Maps a ggml type id; ids that no ggml version defines give `None`.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            23 => Self::IQ4XS,
            30 => Self::BF16,
            other if UNSUPPORTED_NAMES.iter().any(|&(i, _)| i == other) => Self::Unsupported(other),
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
            Self::IQ4XS => "IQ4_XS",
            Self::Unsupported(id) => UNSUPPORTED_NAMES
                .iter()
                .find(|&&(i, _)| i == id)
                .map_or("unknown", |&(_, n)| n),
        }
    }

    /// Elements per block.
    pub fn block_elems(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 => 32,
            Self::Q4K | Self::Q5K | Self::Q6K | Self::IQ4XS => 256,
            Self::Unsupported(id) => unsupported_geometry(id).0,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
            Self::IQ4XS => 136,
            Self::Unsupported(id) => unsupported_geometry(id).1,
        }
    }

    /// Bytes of one row of `n` elements (`n` must be a multiple of the block size).
    pub fn row_bytes(self, n: usize) -> usize {
        n / self.block_elems() * self.block_bytes()
    }

    pub fn is_supported(self) -> bool {
        !matches!(self, Self::Unsupported(_))
    }

    /// The activation format this weight type's dot product consumes (ggml's `vec_dot_type`).
    pub fn act_type(self) -> Option<ActType> {
        Some(match self {
            Self::F32 => ActType::F32,
            Self::F16 => ActType::F16,
            Self::BF16 => ActType::BF16,
            Self::Q4_0 | Self::Q5_0 | Self::Q8_0 => ActType::Q8_0,
            Self::Q4_1 | Self::Q5_1 => ActType::Q8_1,
            Self::Q4K | Self::Q5K | Self::Q6K | Self::IQ4XS => ActType::Q8K,
            Self::Unsupported(_) => return None,
        })
    }
}

/// Non-linear 4-bit codebook shared by IQ4_NL and IQ4_XS.
pub(crate) const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// The f16 at byte `i` as f32, in portable code (no per-call feature detection).
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32_const()
}

/// The 6-bit scale and min of sub-block `j` in the 12-byte K-quant scale array.
#[inline]
pub(crate) fn k_scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

#[cfg(test)]
mod tests;
