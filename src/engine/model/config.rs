//! Hyperparameters of a decoder model, read from the `{arch}.*` metadata of a GGUF file.

use crate::engine::gguf::GgufFile;
use crate::engine::EngineError;

/// Architectures the forward pass implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Qwen3Moe,
}

pub const SUPPORTED_ARCHS: &str = "llama, qwen2, qwen3, qwen3moe";

impl Arch {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "llama" => Self::Llama,
            "qwen2" => Self::Qwen2,
            "qwen3" => Self::Qwen3,
            "qwen3moe" => Self::Qwen3Moe,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Qwen3Moe => "qwen3moe",
        }
    }

    /// Rotary layout: llama rotates adjacent pairs, the Qwen family rotates halves (NeoX).
    pub fn rope_neox(self) -> bool {
        !matches!(self, Self::Llama)
    }
}

/// Rotary position embedding parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    pub base: f32,
    /// How many leading dimensions of each head rotate.
    pub n_dims: usize,
    pub neox: bool,
    /// 1 / linear scaling factor.
    pub freq_scale: f32,
}

/// Mixture-of-experts feed-forward parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MoeConfig {
    pub n_expert: usize,
    pub n_expert_used: usize,
    pub n_ff_expert: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
    pub n_ff: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rms_eps: f32,
    pub rope: RopeConfig,
    pub moe: Option<MoeConfig>,
}

impl ModelConfig {
    pub fn from_gguf(f: &GgufFile) -> Result<Self, EngineError> {
        let arch_name = f.str("general.architecture")?;
        let arch = Arch::parse(arch_name)
            .ok_or_else(|| EngineError::UnsupportedArch(arch_name.to_string()))?;
        let k = |s: &str| format!("{arch_name}.{s}");
        let usize_of = |key: &str| -> Result<usize, EngineError> { Ok(f.u64(&k(key))? as usize) };
        let opt = |key: &str| -> Result<Option<usize>, EngineError> {
            Ok(f.u64_opt(&k(key))?.map(|v| v as usize))
        };

        let n_embd = usize_of("embedding_length")?;
        let n_head = usize_of("attention.head_count")?;
        let n_head_kv = opt("attention.head_count_kv")?.unwrap_or(n_head);
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(EngineError::BadModel(format!(
                "{} query heads cannot share {} key/value heads",
                n_head, n_head_kv
            )));
        }
        let head_dim_k = opt("attention.key_length")?.unwrap_or(n_embd / n_head);
        let head_dim_v = opt("attention.value_length")?.unwrap_or(head_dim_k);
        let n_rot = opt("rope.dimension_count")?.unwrap_or(head_dim_k);
        if n_rot > head_dim_k || n_rot % 2 != 0 {
            return Err(EngineError::BadModel(format!(
                "rope dimension count {n_rot} does not fit head size {head_dim_k}"
            )));
        }
        let freq_scale = match f.str_opt(&k("rope.scaling.type"))? {
            None | Some("none") => match f.f32_opt(&k("rope.scale_linear"))? {
                Some(s) if s > 0.0 => 1.0 / s,
                _ => 1.0,
            },
            Some("linear") => {
                1.0 / f
                    .f32_opt(&k("rope.scaling.factor"))?
                    .filter(|v| *v > 0.0)
                    .unwrap_or(1.0)
            }
            Some(other) => {
                return Err(EngineError::BadModel(format!(
                    "rope scaling type `{other}` is not supported (none, linear)"
                )))
            }
        };
        let moe = match arch {
            Arch::Qwen3Moe => Some(MoeConfig {
                n_expert: usize_of("expert_count")?,
                n_expert_used: usize_of("expert_used_count")?,
                n_ff_expert: usize_of("expert_feed_forward_length")?,
            }),
            _ => None,
        };
        if let Some(m) = moe {
            if m.n_expert_used == 0 || m.n_expert_used > m.n_expert {
                return Err(EngineError::BadModel(format!(
                    "{} experts used out of {}",
                    m.n_expert_used, m.n_expert
                )));
            }
        }
        let vocab_size = match opt("vocab_size")? {
            Some(v) => v,
            None => f
                .tensor_info("token_embd.weight")?
                .dims
                .get(1)
                .copied()
                .unwrap_or(0) as usize,
        };
        Ok(Self {
            arch,
            n_embd,
            n_layer: usize_of("block_count")?,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_ff: opt("feed_forward_length")?.unwrap_or(0),
            vocab_size,
            context_length: opt("context_length")?.unwrap_or(2048),
            rms_eps: f
                .f32_opt(&k("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-5),
            rope: RopeConfig {
                base: f.f32_opt(&k("rope.freq_base"))?.unwrap_or(10000.0),
                n_dims: n_rot,
                neox: arch.rope_neox(),
                freq_scale,
            },
            moe,
        })
    }

    /// Width of one position's keys (all KV heads).
    pub fn kv_dim_k(&self) -> usize {
        self.n_head_kv * self.head_dim_k
    }

    pub fn kv_dim_v(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }
}
