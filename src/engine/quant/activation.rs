//! Quantization of activations (the right-hand side of every matmul) into the format the
//! weight type's dot product consumes, reproducing llama.cpp's x86 rounding exactly:
//! Q8_0/Q8_1 scale by `127/amax` and round half to even; Q8_K scales by `-127/max` (the
//! signed extreme) and keeps per-16 sums.

use half::{bf16, f16};

/// Activation formats (ggml's `vec_dot_type`s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActType {
    F32,
    F16,
    BF16,
    /// 32 elements: f16 d, i8 qs[32].
    Q8_0,
    /// 32 elements: f16 d, f16 s (= d * sum qs), i8 qs[32].
    Q8_1,
    /// 256 elements: f32 d, i8 qs[256], i16 bsums[16].
    Q8K,
}

impl ActType {
    pub fn block_elems(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q8_0 | Self::Q8_1 => 32,
            Self::Q8K => 256,
        }
    }

    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q8_0 => 34,
            Self::Q8_1 => 36,
            Self::Q8K => 292,
        }
    }

    pub fn row_bytes(self, n: usize) -> usize {
        n / self.block_elems() * self.block_bytes()
    }
}

/// Quantizes `x` into `out`, which must be exactly `ty.row_bytes(x.len())` long.
pub fn quantize_activations(ty: ActType, x: &[f32], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        /// The same code with SSE4.1/AVX2 on, so rounding is one instruction, not a libm call.
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn fast(ty: ActType, x: &[f32], out: &mut [u8]) {
            quantize_body(ty, x, out)
        }
        if crate::engine::cpu::fma_available() {
            // SAFETY: the features were detected.
            return unsafe { fast(ty, x, out) };
        }
    }
    quantize_body(ty, x, out)
}

#[inline(always)]
fn quantize_body(ty: ActType, x: &[f32], out: &mut [u8]) {
    assert_eq!(
        out.len(),
        ty.row_bytes(x.len()),
        "quantize_activations: length mismatch"
    );
    match ty {
        ActType::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(x) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        ActType::F16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        ActType::BF16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&bf16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        ActType::Q8_0 => {
            for (o, x) in out.chunks_exact_mut(34).zip(x.chunks_exact(32)) {
                let (d, _) = q8_block(x, &mut o[2..34]);
                o[0..2].copy_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
            }
        }
        ActType::Q8_1 => {
            for (o, x) in out.chunks_exact_mut(36).zip(x.chunks_exact(32)) {
                let (d, sum) = q8_block(x, &mut o[4..36]);
                o[0..2].copy_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
                o[2..4].copy_from_slice(&f16::from_f32(d * sum as f32).to_bits().to_le_bytes());
            }
        }
        ActType::Q8K => {
            for (o, x) in out.chunks_exact_mut(292).zip(x.chunks_exact(256)) {
                q8k_block(x, o);
            }
        }
    }
}

/// One Q8_0/Q8_1 block: returns the scale and the sum of the quants.
#[inline(always)]
fn q8_block(x: &[f32], qs: &mut [u8]) -> (f32, i32) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (q, v) in qs.iter_mut().zip(x) {
        let r = (v * id).round_ties_even() as i32;
        sum += r;
        *q = r as i8 as u8;
    }
    (d, sum)
}

#[inline(always)]
fn q8k_block(x: &[f32], o: &mut [u8]) {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        o.fill(0);
        return;
    }
    let iscale = -127.0 / max;
    for (j, &v) in x.iter().enumerate() {
        o[4 + j] = ((iscale * v).round_ties_even() as i32).min(127) as i8 as u8;
    }
    for g in 0..16 {
        let s: i32 = (0..16).map(|l| o[4 + 16 * g + l] as i8 as i32).sum();
        o[260 + 2 * g..262 + 2 * g].copy_from_slice(&(s as i16).to_le_bytes());
    }
    o[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
}
