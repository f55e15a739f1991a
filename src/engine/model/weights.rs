//! The model's tensors, looked up by their GGUF names and checked for shape and type once
//! at load time, so the forward pass never meets a surprise.

use std::sync::{Arc, OnceLock};

use memmap2::Mmap;

use super::config::{Arch, ModelConfig};
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
    pub wq: Weight,
    pub wk: Weight,
    pub wv: Weight,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub wo: Weight,
    pub ffn_norm: Vec<f32>,
    pub ffn: Ffn,
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
            all.extend([&l.wq, &l.wk, &l.wv, &l.wo]);
            match &l.ffn {
                Ffn::Dense { gate, up, down } => all.extend([gate, up, down]),
                Ffn::Moe {
                    router,
                    gate,
                    up,
                    down,
                } => {
                    all.push(router);
                    all.extend(gate.iter().chain(up).chain(down));
                }
            }
        }
        all
    }
}

struct Loader<'a> {
    f: &'a GgufFile,
}

impl Loader<'_> {
    fn bad(&self, name: &str, what: String) -> EngineError {
        EngineError::BadModel(format!(
            "{}: tensor `{name}` {what}",
            self.f.path().display()
        ))
    }

    /// A matrix with `cols` elements per row and `rows` rows (GGUF dims `[cols, rows, ...]`).
    fn matrix(&self, name: &str, cols: usize, rows: usize) -> Result<Weight, EngineError> {
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

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, EngineError> {
        let w = self.matrix(name, len, 1)?;
        let mut out = vec![0.0; len];
        w.dequantize_row_into(0, &mut out);
        Ok(out)
    }

    fn opt_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>, EngineError> {
        if self.f.has_tensor(name) {
            self.vector(name, len).map(Some)
        } else {
            Ok(None)
        }
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
        let q_dim = c.n_head * c.head_dim_k;
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            let ffn = match c.moe {
                None => Ffn::Dense {
                    gate: l.matrix(&n("ffn_gate.weight"), c.n_embd, c.n_ff)?,
                    up: l.matrix(&n("ffn_up.weight"), c.n_embd, c.n_ff)?,
                    down: l.matrix(&n("ffn_down.weight"), c.n_ff, c.n_embd)?,
                },
                Some(m) => {
                    let experts = |name: &str,
                                   cols: usize,
                                   rows: usize|
                     -> Result<Vec<Weight>, EngineError> {
                        let all = l.matrix(&n(name), cols, rows * m.n_expert)?;
                        Ok((0..m.n_expert)
                            .map(|e| all.rows_view(e * rows, rows))
                            .collect())
                    };
                    Ffn::Moe {
                        router: l.matrix(&n("ffn_gate_inp.weight"), c.n_embd, m.n_expert)?,
                        gate: experts("ffn_gate_exps.weight", c.n_embd, m.n_ff_expert)?,
                        up: experts("ffn_up_exps.weight", c.n_embd, m.n_ff_expert)?,
                        down: experts("ffn_down_exps.weight", m.n_ff_expert, c.n_embd)?,
                    }
                }
            };
            let qk_norm = matches!(c.arch, Arch::Qwen3 | Arch::Qwen3Moe);
            let norm = |s: &str, len| {
                if qk_norm {
                    l.vector(&n(s), len).map(Some)
                } else {
                    Ok(None)
                }
            };
            layers.push(LayerWeights {
                attn_norm: l.vector(&n("attn_norm.weight"), c.n_embd)?,
                wq: l.matrix(&n("attn_q.weight"), c.n_embd, q_dim)?,
                wk: l.matrix(&n("attn_k.weight"), c.n_embd, c.kv_dim_k())?,
                wv: l.matrix(&n("attn_v.weight"), c.n_embd, c.kv_dim_v())?,
                bq: l.opt_vector(&n("attn_q.bias"), q_dim)?,
                bk: l.opt_vector(&n("attn_k.bias"), c.kv_dim_k())?,
                bv: l.opt_vector(&n("attn_v.bias"), c.kv_dim_v())?,
                q_norm: norm("attn_q_norm.weight", c.head_dim_k)?,
                k_norm: norm("attn_k_norm.weight", c.head_dim_k)?,
                wo: l.matrix(&n("attn_output.weight"), c.n_head * c.head_dim_v, c.n_embd)?,
                ffn_norm: l.vector(&n("ffn_norm.weight"), c.n_embd)?,
                ffn,
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
