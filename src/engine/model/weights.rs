//! The model's tensors, looked up by their GGUF names and checked for shape and type once
//! at load time, so the forward pass never meets a surprise.

use std::sync::{Arc, OnceLock};

use memmap2::Mmap;

use super::config::{Arch, DeltaNetConfig, ModelConfig};
use crate::engine::gguf::GgufFile;
use crate::engine::quant::interleave::interleave;
use crate::engine::quant::{dequantize_row, GgmlType};
use crate::engine::EngineError;

/// A 2-D weight matrix (`rows` x `cols`, rows contiguous) living in the mapped file.
#[derive(Clone)]
pub struct Weight {
    map: Arc<Mmap>,
    offset: usize,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub name: String,
    /// The interleaved copy, made on first use and shared by clones.
    interleaved: Arc<OnceLock<Option<Vec<u8>>>>,
}

impl std::fmt::Debug for Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}[{}x{} {}]",
            self.name,
            self.rows,
            self.cols,
            self.ty.name()
        )
    }
}

impl Weight {
    pub fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.cols)
    }

    /// All rows' bytes.
    pub fn data(&self) -> &[u8] {
        &self.map[self.offset..self.offset + self.rows * self.row_bytes()]
    }

    pub fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.map[self.offset + r * rb..self.offset + (r + 1) * rb]
    }

    /// The first `rows / 4 * 4` rows in the four-row interleaved layout of
    /// [`crate::engine::quant::interleave`], made on first use; `None` for types without one.
    pub fn interleaved(&self) -> Option<&[u8]> {
        self.interleaved
            .get_or_init(|| interleave(self.ty, self.data(), self.rows, self.cols))
            .as_deref()
    }

    /// A matrix over bytes of its own rather than a mapped file (kernel checks, benchmarks).
    pub fn from_bytes(
        name: &str,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &[u8],
    ) -> std::io::Result<Weight> {
        let mut map = memmap2::MmapMut::map_anon(data.len().max(1))?;
        map[..data.len()].copy_from_slice(data);
        Ok(Weight {
            map: Arc::new(map.make_read_only()?),
            offset: 0,
            ty,
            rows,
            cols,
            name: name.to_string(),
            interleaved: Arc::default(),
        })
    }

    /// Rows `start..start + n` as their own matrix (experts of a stacked 3-D tensor).
    pub fn rows_view(&self, start: usize, n: usize) -> Weight {
        Weight {
            map: Arc::clone(&self.map),
            offset: self.offset + start * self.row_bytes(),
            ty: self.ty,
            rows: n,
            cols: self.cols,
            name: self.name.clone(),
            interleaved: Arc::default(),
        }
    }

    /// Row `r` dequantized into `out` (embedding lookup).
    pub fn dequantize_row_into(&self, r: usize, out: &mut [f32]) {
        dequantize_row(self.ty, self.row(r), out);
    }
}

pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub mixer: Mixer,
    /// The norm before the feed-forward block (`ffn_norm`, or `post_attention_norm` in
    /// qwen35moe).
    pub ffn_norm: Vec<f32>,
    pub ffn: Ffn,
}

/// What mixes information across positions in a layer.
pub enum Mixer {
    Attention(AttentionWeights),
    DeltaNet(DeltaNetWeights),
}

pub struct AttentionWeights {
    /// Queries; in a gated layer each head's queries are followed by its gate values.
    pub wq: Weight,
    pub wk: Weight,
    pub wv: Weight,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub wo: Weight,
    /// The output is multiplied by sigmoid of a per-head gate taken from `wq` (qwen35moe).
    pub gated: bool,
}

/// A Gated DeltaNet layer (qwen35moe's linear attention).
pub struct DeltaNetWeights {
    /// q, k and v of every head, side by side (`attn_qkv`).
    pub qkv: Weight,
    /// The output gate z (`attn_gate`).
    pub z: Weight,
    pub beta: Weight,
    pub alpha: Weight,
    /// `conv_kernel` taps per channel (`ssm_conv1d`).
    pub conv: Vec<f32>,
    pub dt_bias: Vec<f32>,
    /// `-exp(A_log)`, stored negated (`ssm_a`).
    pub a: Vec<f32>,
    /// The per-head RMSNorm before the SiLU(z) gate (`ssm_norm`).
    pub norm: Vec<f32>,
    pub out: Weight,
}

/// The always-on expert of qwen35moe, scaled by `sigmoid(gate_inp · x)`.
pub struct SharedExpert {
    pub gate: Weight,
    pub up: Weight,
    pub down: Weight,
    /// One row: the scalar gate's weights.
    pub gate_inp: Weight,
}

pub enum Ffn {
    Dense {
        gate: Weight,
        up: Weight,
        down: Weight,
    },
    /// Experts are row ranges of stacked tensors; the router is a small dense matrix.
    Moe {
        router: Weight,
        gate: Vec<Weight>,
        up: Vec<Weight>,
        down: Vec<Weight>,
        shared: Option<Box<SharedExpert>>,
    },
}

pub struct Weights {
    pub token_embd: Weight,
    pub output_norm: Vec<f32>,
    /// The LM head; the embedding matrix itself when the model ties them.
    pub output: Weight,
    pub rope_freqs: Option<Vec<f32>>,
    pub layers: Vec<LayerWeights>,
}

impl Weights {
    /// Every matrix the forward pass multiplies by.
    pub fn matrices(&self) -> Vec<&Weight> {
        let mut all = vec![&self.output];
        for l in &self.layers {
            match &l.mixer {
                Mixer::Attention(a) => all.extend([&a.wq, &a.wk, &a.wv, &a.wo]),
                Mixer::DeltaNet(d) => all.extend([&d.qkv, &d.z, &d.beta, &d.alpha, &d.out]),
            }
            match &l.ffn {
                Ffn::Dense { gate, up, down } => all.extend([gate, up, down]),
                Ffn::Moe {
                    router,
                    gate,
                    up,
                    down,
                    shared,
                } => {
                    all.push(router);
                    all.extend(gate.iter().chain(up).chain(down));
                    if let Some(s) = shared {
                        all.extend([&s.gate, &s.up, &s.down, &s.gate_inp]);
                    }
                }
            }
        }
        all
    }
}

/// Reads checked matrices and vectors out of a GGUF file (the vision tower uses it too).
pub(crate) struct Loader<'a> {
    f: &'a GgufFile,
}

impl<'a> Loader<'a> {
    pub(crate) fn new(f: &'a GgufFile) -> Self {
        Self { f }
    }

    pub(crate) fn bad(&self, name: &str, what: String) -> EngineError {
        EngineError::BadModel(format!(
            "{}: tensor `{name}` {what}",
            self.f.path().display()
        ))
    }

    /// A matrix with `cols` elements per row and `rows` rows (GGUF dims `[cols, rows, ...]`).
    pub(crate) fn matrix(
        &self,
        name: &str,
        cols: usize,
        rows: usize,
    ) -> Result<Weight, EngineError> {
        let t = self.f.tensor_info(name)?;
        if !t.ty.is_supported() {
            return Err(self.bad(
                name,
                format!(
                    "has type {}, which this engine cannot compute with",
                    t.ty.name()
                ),
            ));
        }
        let total: u64 = t.dims[1..].iter().product();
        if t.dims[0] as usize != cols || total as usize != rows {
            return Err(self.bad(
                name,
                format!("has shape {:?}, expected [{cols}, {rows}]", t.dims),
            ));
        }
        Ok(Weight {
            map: Arc::clone(self.f.map()),
            offset: t.offset as usize,
            ty: t.ty,
            rows,
            cols,
            name: name.to_string(),
            interleaved: Arc::default(),
        })
    }

    pub(crate) fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, EngineError> {
        let w = self.matrix(name, len, 1)?;
        let mut out = vec![0.0; len];
        w.dequantize_row_into(0, &mut out);
        Ok(out)
    }

    /// Every element of a tensor of `len` elements, whatever its shape, as f32.
    pub(crate) fn flat(&self, name: &str, len: usize) -> Result<Vec<f32>, EngineError> {
        let t = self.f.tensor_info(name)?;
        let cols = t.dims.first().copied().unwrap_or(0) as usize;
        if cols == 0 || !len.is_multiple_of(cols) {
            return Err(self.bad(
                name,
                format!("has shape {:?}, expected {len} elements", t.dims),
            ));
        }
        let w = self.matrix(name, cols, len / cols)?;
        let mut out = vec![0.0; len];
        for (r, row) in out.chunks_exact_mut(cols).enumerate() {
            w.dequantize_row_into(r, row);
        }
        Ok(out)
    }

    pub(crate) fn opt_vector(
        &self,
        name: &str,
        len: usize,
    ) -> Result<Option<Vec<f32>>, EngineError> {
        if self.f.has_tensor(name) {
            self.vector(name, len).map(Some)
        } else {
            Ok(None)
        }
    }
}

impl Loader<'_> {
    fn attention(&self, i: usize, c: &ModelConfig) -> Result<AttentionWeights, EngineError> {
        let n = |s: &str| format!("blk.{i}.{s}");
        let gated = c.arch == Arch::Qwen35Moe;
        let q_dim = c.n_head * c.head_dim_k;
        let wq_rows = if gated { 2 * q_dim } else { q_dim };
        let qk_norm = matches!(c.arch, Arch::Qwen3 | Arch::Qwen3Moe | Arch::Qwen35Moe);
        let norm = |s: &str, len| {
            if qk_norm {
                self.vector(&n(s), len).map(Some)
            } else {
                Ok(None)
            }
        };
        Ok(AttentionWeights {
            wq: self.matrix(&n("attn_q.weight"), c.n_embd, wq_rows)?,
            wk: self.matrix(&n("attn_k.weight"), c.n_embd, c.kv_dim_k())?,
            wv: self.matrix(&n("attn_v.weight"), c.n_embd, c.kv_dim_v())?,
            bq: self.opt_vector(&n("attn_q.bias"), q_dim)?,
            bk: self.opt_vector(&n("attn_k.bias"), c.kv_dim_k())?,
            bv: self.opt_vector(&n("attn_v.bias"), c.kv_dim_v())?,
            q_norm: norm("attn_q_norm.weight", c.head_dim_k)?,
            k_norm: norm("attn_k_norm.weight", c.head_dim_k)?,
            wo: self.matrix(&n("attn_output.weight"), c.n_head * c.head_dim_v, c.n_embd)?,
            gated,
        })
    }

    fn delta_net(
        &self,
        i: usize,
        c: &ModelConfig,
        d: &DeltaNetConfig,
    ) -> Result<DeltaNetWeights, EngineError> {
        let n = |s: &str| format!("blk.{i}.{s}");
        let conv = self.matrix(&n("ssm_conv1d.weight"), d.conv_kernel, d.conv_dim())?;
        let mut taps = vec![0.0; d.conv_kernel * d.conv_dim()];
        for (r, row) in taps.chunks_exact_mut(d.conv_kernel).enumerate() {
            conv.dequantize_row_into(r, row);
        }
        Ok(DeltaNetWeights {
            qkv: self.matrix(&n("attn_qkv.weight"), c.n_embd, d.conv_dim())?,
            z: self.matrix(&n("attn_gate.weight"), c.n_embd, d.value_dim())?,
            beta: self.matrix(&n("ssm_beta.weight"), c.n_embd, d.n_v_heads)?,
            alpha: self.matrix(&n("ssm_alpha.weight"), c.n_embd, d.n_v_heads)?,
            conv: taps,
            dt_bias: self.vector(&n("ssm_dt.bias"), d.n_v_heads)?,
            a: self.vector(&n("ssm_a"), d.n_v_heads)?,
            norm: self.vector(&n("ssm_norm.weight"), d.head_dim)?,
            out: self.matrix(&n("ssm_out.weight"), d.value_dim(), c.n_embd)?,
        })
    }

    fn ffn(&self, i: usize, c: &ModelConfig) -> Result<Ffn, EngineError> {
        let n = |s: &str| format!("blk.{i}.{s}");
        let Some(m) = c.moe else {
            return Ok(Ffn::Dense {
                gate: self.matrix(&n("ffn_gate.weight"), c.n_embd, c.n_ff)?,
                up: self.matrix(&n("ffn_up.weight"), c.n_embd, c.n_ff)?,
                down: self.matrix(&n("ffn_down.weight"), c.n_ff, c.n_embd)?,
            });
        };
        let experts = |name: &str, cols: usize, rows: usize| -> Result<Vec<Weight>, EngineError> {
            let all = self.matrix(&n(name), cols, rows * m.n_expert)?;
            Ok((0..m.n_expert)
                .map(|e| all.rows_view(e * rows, rows))
                .collect())
        };
        let shared = match m.n_ff_shared {
            0 => None,
            ff => Some(Box::new(SharedExpert {
                gate: self.matrix(&n("ffn_gate_shexp.weight"), c.n_embd, ff)?,
                up: self.matrix(&n("ffn_up_shexp.weight"), c.n_embd, ff)?,
                down: self.matrix(&n("ffn_down_shexp.weight"), ff, c.n_embd)?,
                gate_inp: self.matrix(&n("ffn_gate_inp_shexp.weight"), c.n_embd, 1)?,
            })),
        };
        Ok(Ffn::Moe {
            router: self.matrix(&n("ffn_gate_inp.weight"), c.n_embd, m.n_expert)?,
            gate: experts("ffn_gate_exps.weight", c.n_embd, m.n_ff_expert)?,
            up: experts("ffn_up_exps.weight", c.n_embd, m.n_ff_expert)?,
            down: experts("ffn_down_exps.weight", m.n_ff_expert, c.n_embd)?,
            shared,
        })
    }
}

impl Weights {
    pub fn load(f: &GgufFile, c: &ModelConfig) -> Result<Self, EngineError> {
        let l = Loader { f };
        let token_embd = l.matrix("token_embd.weight", c.n_embd, c.vocab_size)?;
        let output = if f.has_tensor("output.weight") {
            l.matrix("output.weight", c.n_embd, c.vocab_size)?
        } else {
            token_embd.clone()
        };
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            let mixer = match &c.delta_net {
                Some(d) if c.is_recurrent(i) => Mixer::DeltaNet(l.delta_net(i, c, d)?),
                _ => Mixer::Attention(l.attention(i, c)?),
            };
            let ffn_norm = if c.arch == Arch::Qwen35Moe {
                "post_attention_norm.weight"
            } else {
                "ffn_norm.weight"
            };
            layers.push(LayerWeights {
                attn_norm: l.vector(&n("attn_norm.weight"), c.n_embd)?,
                mixer,
                ffn_norm: l.vector(&n(ffn_norm), c.n_embd)?,
                ffn: l.ffn(i, c)?,
            });
        }
        Ok(Self {
            token_embd,
            output_norm: l.vector("output_norm.weight", c.n_embd)?,
            output,
            rope_freqs: l.opt_vector("rope_freqs.weight", c.rope.n_dims / 2)?,
            layers,
        })
    }
}
