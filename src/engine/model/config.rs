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
    /// Qwen3.5/3.6 MoE: Gated DeltaNet layers with a gated full-attention layer every
    /// `full_attention_interval`, and routed plus shared experts.
    Qwen35Moe,
}

pub const SUPPORTED_ARCHS: &str = "llama, qwen2, qwen3, qwen3moe, qwen35moe";

impl Arch {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "llama" => Self::Llama,
            "qwen2" => Self::Qwen2,
            "qwen3" => Self::Qwen3,
            "qwen3moe" => Self::Qwen3Moe,
            "qwen35moe" => Self::Qwen35Moe,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Qwen3Moe => "qwen3moe",
            Self::Qwen35Moe => "qwen35moe",
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
    /// Interleaved multi-section RoPE (Qwen3.5's IMRoPE): rotary pairs take their angle
    /// from the time, height or width position in turn, as `rope.dimension_sections` says.
    /// Each row's position has a component per section ([`RopePos`]).
    pub sections: Option<[usize; 4]>,
}

/// A row's rotary position: time, height, width and extra components. Text rows hold their
/// position in the first three and 0 in the last, as llama.cpp expands a text position for
/// multi-section RoPE; models without sections read only the first.
pub type RopePos = [u32; 4];

/// The rotary position of text at position `p`.
pub fn text_pos(p: usize) -> RopePos {
    let p = p as u32;
    [p, p, p, 0]
}

impl RopeConfig {
    /// Which component of a [`RopePos`] rotary pair `i` takes its angle from: in IMRoPE the
    /// sectors interleave time, height and width, as ggml's `ggml_mrope_cache_init` assigns
    /// them, and the rest take the extra component.
    pub fn pair_component(&self, i: usize) -> usize {
        let Some(s) = self.sections else {
            return 0;
        };
        let total: usize = s.iter().sum();
        let sector = i % total.max(1);
        let interleaved = |k: usize, n: usize| sector % 3 == k && sector < 3 * n;
        if interleaved(1, s[1]) {
            1
        } else if interleaved(2, s[2]) {
            2
        } else if interleaved(0, s[0]) {
            0
        } else {
            3
        }
    }
}

/// Mixture-of-experts feed-forward parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MoeConfig {
    pub n_expert: usize,
    pub n_expert_used: usize,
    pub n_ff_expert: usize,
    /// Width of the always-on shared expert (0: none).
    pub n_ff_shared: usize,
}

/// The Gated DeltaNet (linear attention) layers of a hybrid model.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaNetConfig {
    /// Taps of the causal depthwise convolution.
    pub conv_kernel: usize,
    /// Width of each key and value head (`ssm.state_size`); the state is this squared.
    pub head_dim: usize,
    pub n_k_heads: usize,
    pub n_v_heads: usize,
    /// Which layers are recurrent; the rest are full attention.
    pub recurrent: Vec<bool>,
}

impl DeltaNetConfig {
    pub fn key_dim(&self) -> usize {
        self.n_k_heads * self.head_dim
    }

    pub fn value_dim(&self) -> usize {
        self.n_v_heads * self.head_dim
    }

    /// Channels of the convolution: q, k and v side by side.
    pub fn conv_dim(&self) -> usize {
        2 * self.key_dim() + self.value_dim()
    }

    /// Floats of one layer's recurrent state for one sequence: the convolution's last
    /// `conv_kernel - 1` inputs, then one `head_dim`² matrix per value head.
    pub fn state_len(&self) -> usize {
        (self.conv_kernel - 1) * self.conv_dim() + self.n_v_heads * self.head_dim * self.head_dim
    }
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
    /// Present in hybrid models (qwen35moe).
    pub delta_net: Option<DeltaNetConfig>,
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
            Arch::Qwen3Moe | Arch::Qwen35Moe => Some(MoeConfig {
                n_expert: usize_of("expert_count")?,
                n_expert_used: usize_of("expert_used_count")?,
                n_ff_expert: usize_of("expert_feed_forward_length")?,
                n_ff_shared: opt("expert_shared_feed_forward_length")?.unwrap_or(0),
            }),
            _ => None,
        };
        let n_layer = usize_of("block_count")?;
        let delta_net = match arch {
            Arch::Qwen35Moe => Some(delta_net_config(f, arch_name, n_layer)?),
            _ => None,
        };
        let sections = match arch {
            Arch::Qwen35Moe => {
                let key = k("rope.dimension_sections");
                let s = f.array(&key)?;
                let mut out = [0usize; 4];
                for (o, v) in out.iter_mut().zip(s) {
                    *o = v.as_u64().ok_or_else(|| {
                        EngineError::BadModel(format!("{key} holds a non-integer"))
                    })? as usize;
                }
                if out.iter().sum::<usize>() == 0 {
                    return Err(EngineError::BadModel("rope sections are all empty".into()));
                }
                Some(out)
            }
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
            n_layer,
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
                sections,
            },
            moe,
            delta_net,
        })
    }

    /// Width of one position's keys (all KV heads).
    pub fn kv_dim_k(&self) -> usize {
        self.n_head_kv * self.head_dim_k
    }

    pub fn kv_dim_v(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }

    /// Whether layer `il` is a recurrent (Gated DeltaNet) layer.
    pub fn is_recurrent(&self, il: usize) -> bool {
        self.delta_net
            .as_ref()
            .is_some_and(|d| d.recurrent.get(il).copied().unwrap_or(false))
    }

    /// Layers with a KV cache (all but the recurrent ones).
    pub fn attention_layers(&self) -> usize {
        (0..self.n_layer).filter(|&l| !self.is_recurrent(l)).count()
    }

    /// Recurrent layers, each holding per-sequence state instead of a KV cache.
    pub fn recurrent_layers(&self) -> usize {
        self.n_layer - self.attention_layers()
    }

    /// Floats of recurrent state one sequence holds across all layers (0 for transformers).
    pub fn recurrent_state_len(&self) -> usize {
        self.delta_net
            .as_ref()
            .map_or(0, |d| d.state_len() * self.recurrent_layers())
    }
}

/// The `ssm.*` keys of a hybrid model; a layer is recurrent unless it is every
/// `full_attention_interval`-th (llama.cpp's rule when no explicit layer list is given).
fn delta_net_config(
    f: &GgufFile,
    arch: &str,
    n_layer: usize,
) -> Result<DeltaNetConfig, EngineError> {
    let get =
        |key: &str| -> Result<usize, EngineError> { Ok(f.u64(&format!("{arch}.{key}"))? as usize) };
    let interval = f
        .u64_opt(&format!("{arch}.full_attention_interval"))?
        .unwrap_or(4)
        .max(1) as usize;
    let c = DeltaNetConfig {
        conv_kernel: get("ssm.conv_kernel")?,
        head_dim: get("ssm.state_size")?,
        n_k_heads: get("ssm.group_count")?,
        n_v_heads: get("ssm.time_step_rank")?,
        recurrent: (0..n_layer).map(|i| (i + 1) % interval != 0).collect(),
    };
    let inner = get("ssm.inner_size")?;
    if c.conv_kernel < 2
        || c.head_dim == 0
        || c.n_k_heads == 0
        || !c.n_v_heads.is_multiple_of(c.n_k_heads)
        || inner != c.value_dim()
    {
        return Err(EngineError::BadModel(format!(
            "linear attention shape: kernel {}, {} key heads, {} value heads of {}, inner size {inner}",
            c.conv_kernel, c.n_k_heads, c.n_v_heads, c.head_dim
        )));
    }
    Ok(c)
}
