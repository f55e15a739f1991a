//! The forward pass on the device: weights, the paged KV cache and every activation stay
//! there; a call uploads the rows' tokens and positions and brings back what the caller
//! samples from.
//!
//! Per layer it launches six kernels: the QKV product (RMSNorm and activation quantization
//! in its prologue), `qkv_post` (bias, q/k norms, RoPE, the cache write), attention, the
//! output product (adding into the residual stream), the gate/up product (SwiGLU in its
//! epilogue) and the down product (adding). A decode step of single-token rows is captured
//! as a CUDA graph per batch-size bucket and replayed with new tokens and positions.

use std::collections::HashMap;

use cudarc::driver::CudaGraph;

use super::gpu::{DevBuf, Gpu};
use super::ops::{self, Epilogue, GpuMat, Heads, Input, Rope, Rows};
use super::CudaError;
use crate::engine::kv::{blocks_for, BLOCK};
use crate::engine::model::config::ModelConfig;
use crate::engine::model::weights::{Ffn, Mixer, Weight};
use crate::engine::model::{Model, SeqBatch, UBATCH};

/// What to bring back for a sequence that asked for logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The greedy token (only its id crosses PCIe).
    Argmax,
    /// The k best candidates, by logit then id.
    TopK(usize),
    /// The whole logits row.
    Logits,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Picked {
    Token(u32),
    TopK(Vec<(u32, f32)>),
    Logits(Vec<f32>),
}

/// Batch-size buckets that decode steps are captured for.
pub const GRAPH_BUCKETS: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

#[derive(Debug, Clone, Copy)]
pub struct CudaOptions {
    /// KV-cache positions on the device (rounded up to whole blocks).
    pub kv_tokens: usize,
    /// Sequences in one call at most.
    pub max_seqs: usize,
    /// Rows (tokens) in one call at most.
    pub max_rows: usize,
    /// Replay captured graphs for decode steps.
    pub graphs: bool,
}

impl Default for CudaOptions {
    fn default() -> Self {
        Self {
            kv_tokens: 65536,
            max_seqs: 128,
            max_rows: UBATCH,
            graphs: true,
        }
    }
}

enum GateUp {
    /// Gate rows stacked over up rows: one product with SwiGLU in its epilogue.
    Stacked(GpuMat),
    /// Different weight types: two products and an element-wise SwiGLU.
    Split(GpuMat, GpuMat),
}

struct Layer {
    attn_norm: DevBuf,
    ffn_norm: DevBuf,
    /// The QKV projection, stacked when all three share a type; each with the column of
    /// the QKV row its output starts at.
    qkv: Vec<(GpuMat, usize)>,
    qkv_bias: Option<DevBuf>,
    q_norm: Option<DevBuf>,
    k_norm: Option<DevBuf>,
    wo: GpuMat,
    gate_up: GateUp,
    down: GpuMat,
    k_cache: DevBuf,
    v_cache: DevBuf,
}

/// Activation buffers for `max_rows` rows, and the per-call row tables.
struct Scratch {
    x: DevBuf,
    qkv: DevBuf,
    q: DevBuf,
    attn: DevBuf,
    gate: DevBuf,
    up: DevBuf,
    partial: DevBuf,
    counters: DevBuf,
    x_sel: DevBuf,
    logits: DevBuf,
    tokens: DevBuf,
    pos: DevBuf,
    table: DevBuf,
    tables: DevBuf,
    sel: DevBuf,
    ids: DevBuf,
    topk_ids: DevBuf,
    topk_vals: DevBuf,
}

pub struct CudaModel {
    pub gpu: Gpu,
    cfg: ModelConfig,
    opts: CudaOptions,
    token_embd: GpuMat,
    output: GpuMat,
    output_norm: DevBuf,
    rope_freqs: Option<DevBuf>,
    layers: Vec<Layer>,
    s: Scratch,
    /// Blocks of the cache; block `blocks` is a scratch block that padding rows write to.
    blocks: usize,
    /// Entries of one sequence's block table.
    table_len: usize,
    graphs: HashMap<usize, CudaGraph>,
    /// Bytes of weights one decode step reads.
    weight_bytes: usize,
}

fn upload_mat(gpu: &Gpu, w: &Weight) -> Result<GpuMat, CudaError> {
    GpuMat::upload(gpu, w.ty, w.rows, w.cols, w.data())
        .map_err(|e| CudaError::Unsupported(format!("{}: {e}", w.name)))
}

/// Stacks matrices of one type and width into one (rows one after the other).
fn stack(gpu: &Gpu, ws: &[&Weight]) -> Result<Option<GpuMat>, CudaError> {
    let (ty, cols) = (ws[0].ty, ws[0].cols);
    if ws.iter().any(|w| w.ty != ty || w.cols != cols) {
        return Ok(None);
    }
    let data: Vec<u8> = ws.iter().flat_map(|w| w.data().iter().copied()).collect();
    let rows = ws.iter().map(|w| w.rows).sum();
    GpuMat::upload(gpu, ty, rows, cols, &data)
        .map(Some)
        .map_err(|e| CudaError::Unsupported(format!("{}: {e}", ws[0].name)))
}

fn f32s(gpu: &Gpu, v: &[f32]) -> Result<DevBuf, CudaError> {
    gpu.upload(v)
}

impl CudaModel {
    /// Uploads `model`'s weights to `gpu` and allocates the cache and scratch buffers.
    /// Fails with [`CudaError::Unsupported`] for what the GPU path does not run (mixture of
    /// experts, weight types without a kernel, heads over 256 wide).
    pub fn load(gpu: Gpu, model: &Model, opts: CudaOptions) -> Result<Self, CudaError> {
        let c = model.config.clone();
        if c.moe.is_some() {
            return Err(CudaError::Unsupported(format!(
                "{} (mixture of experts)",
                c.arch.name()
            )));
        }
        if c.head_dim_k != c.head_dim_v || c.head_dim_k > 256 || !c.head_dim_k.is_multiple_of(32) {
            return Err(CudaError::Unsupported(format!(
                "heads of {}/{} dims (32..=256, keys and values equal)",
                c.head_dim_k, c.head_dim_v
            )));
        }
        for name in ops::MATVEC_KERNELS {
            gpu.allow_shared(name, ops::MATVEC_SHARED)?;
        }
        let w = &model.weights;
        let (e, hd) = (c.n_embd, c.head_dim_k);
        let (qd, kd) = (c.n_head * hd, c.kv_dim_k());
        let blocks = blocks_for(opts.kv_tokens).max(1);
        let mut layers = Vec::with_capacity(c.n_layer);
        let mut weight_bytes = w.output.data().len();
        for layer in &w.layers {
            let Mixer::Attention(l) = &layer.mixer else {
                unreachable!("transformers only (no moe, so no hybrid)")
            };
            let qkv = match stack(&gpu, &[&l.wq, &l.wk, &l.wv])? {
                Some(m) => vec![(m, 0)],
                None => vec![
                    (upload_mat(&gpu, &l.wq)?, 0),
                    (upload_mat(&gpu, &l.wk)?, qd),
                    (upload_mat(&gpu, &l.wv)?, qd + kd),
                ],
            };
            let Ffn::Dense { gate, up, down } = &layer.ffn else {
                unreachable!("dense models only")
            };
            let gate_up = match stack(&gpu, &[gate, up])? {
                Some(m) => GateUp::Stacked(m),
                None => GateUp::Split(upload_mat(&gpu, gate)?, upload_mat(&gpu, up)?),
            };
            let bias = match (&l.bq, &l.bk, &l.bv) {
                (Some(q), Some(k), Some(v)) => Some(f32s(&gpu, &[q.as_slice(), k, v].concat())?),
                (None, None, None) => None,
                _ => {
                    return Err(CudaError::Unsupported(
                        "a QKV bias on some of q, k, v only".into(),
                    ))
                }
            };
            weight_bytes += [&l.wq, &l.wk, &l.wv, &l.wo, gate, up, down]
                .iter()
                .map(|m| m.data().len())
                .sum::<usize>();
            let cache = |gpu: &Gpu| gpu.alloc((blocks + 1) * BLOCK * kd * 2);
            layers.push(Layer {
                attn_norm: f32s(&gpu, &layer.attn_norm)?,
                ffn_norm: f32s(&gpu, &layer.ffn_norm)?,
                qkv,
                qkv_bias: bias,
                q_norm: l.q_norm.as_deref().map(|v| f32s(&gpu, v)).transpose()?,
                k_norm: l.k_norm.as_deref().map(|v| f32s(&gpu, v)).transpose()?,
                wo: upload_mat(&gpu, &l.wo)?,
                gate_up,
                down: upload_mat(&gpu, down)?,
                k_cache: cache(&gpu)?,
                v_cache: cache(&gpu)?,
            });
        }
        let (rows, seqs) = (
            opts.max_rows
                .max(opts.max_seqs)
                .max(*GRAPH_BUCKETS.last().unwrap_or(&1)),
            opts.max_seqs.max(1),
        );
        let heads = Heads {
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: hd,
        };
        let table_len = blocks_for(c.context_length.min(blocks * BLOCK)).max(1);
        let max_partial = (0..=rows)
            .map(|r| ops::partial_floats(r, heads, ops::splits(gpu.sms, r.max(1), c.n_head)))
            .max()
            .unwrap_or(0);
        let f = 4;
        let s = Scratch {
            x: gpu.alloc(rows * e * f)?,
            qkv: gpu.alloc(rows * (qd + 2 * kd) * f)?,
            q: gpu.alloc(rows * qd * f)?,
            attn: gpu.alloc(rows * qd * f)?,
            gate: gpu.alloc(rows * c.n_ff * f)?,
            up: gpu.alloc(rows * c.n_ff * f)?,
            partial: gpu.alloc(max_partial * f)?,
            counters: gpu.alloc(rows * c.n_head * 4)?,
            x_sel: gpu.alloc(seqs.max(GRAPH_BUCKETS[7]) * e * f)?,
            logits: gpu.alloc(seqs.max(GRAPH_BUCKETS[7]) * c.vocab_size * f)?,
            tokens: gpu.alloc(rows * 4)?,
            pos: gpu.alloc(rows * 4)?,
            table: gpu.alloc(rows * 4)?,
            tables: gpu.alloc((rows + 1) * table_len * 4)?,
            sel: gpu.alloc(rows * 4)?,
            ids: gpu.alloc(rows * 4)?,
            topk_ids: gpu.alloc(ops::TOPK_MAX * 4)?,
            topk_vals: gpu.alloc(ops::TOPK_MAX * 4)?,
        };
        let m = Self {
            token_embd: upload_mat(&gpu, &w.token_embd)
                .or_else(|_| embed_as_f32(&gpu, &w.token_embd))?,
            output: upload_mat(&gpu, &w.output)?,
            output_norm: f32s(&gpu, &w.output_norm)?,
            rope_freqs: w.rope_freqs.as_deref().map(|v| f32s(&gpu, v)).transpose()?,
            gpu,
            cfg: c,
            opts: CudaOptions {
                max_rows: rows,
                max_seqs: seqs,
                ..opts
            },
            layers,
            s,
            blocks,
            table_len,
            graphs: HashMap::new(),
            weight_bytes,
        };
        m.gpu.sync()?;
        Ok(m)
    }

    pub fn describe(&self) -> String {
        format!(
            "{}, {} KV blocks, graphs {}",
            self.gpu.describe(),
            self.blocks,
            if self.opts.graphs { "on" } else { "off" }
        )
    }

    /// Bytes of weights a decode step reads (each matrix once, the LM head included).
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// KV-cache blocks sequences may use (ids `0..blocks`).
    pub fn kv_blocks(&self) -> usize {
        self.blocks
    }

    /// Kernel launches in one decode step (the launch floor's count).
    pub fn kernels_per_step(&self) -> usize {
        let per_layer: usize = self
            .layers
            .iter()
            .map(|l| l.qkv.len() + 5 + usize::from(matches!(l.gate_up, GateUp::Split(..))) * 2)
            .sum();
        per_layer + 3
    }

    pub fn set_graphs(&mut self, on: bool) {
        self.opts.graphs = on;
    }

    fn heads(&self) -> Heads {
        Heads {
            n_head: self.cfg.n_head,
            n_head_kv: self.cfg.n_head_kv,
            head_dim: self.cfg.head_dim_k,
        }
    }

    fn rope(&self) -> Rope {
        let r = &self.cfg.rope;
        Rope {
            n_rot: r.n_dims,
            neox: r.neox,
            theta_scale: r.base.powf(-2.0 / r.n_dims as f32),
            freq_scale: r.freq_scale,
            freq_factors: self.rope_freqs.as_ref().map_or(0, |b| b.ptr),
        }
    }

    /// One forward pass over several sequences' tokens (as [`Model::forward_batch`]):
    /// keys and values go into the device cache through each block table; each sequence
    /// that asks for logits gets `picks[i]` of them, in order.
    pub fn forward(&mut self, seqs: &[SeqBatch], picks: &[Pick]) -> Result<Vec<Picked>, CudaError> {
        let n: usize = seqs.iter().map(|s| s.tokens.len()).sum();
        let wanted = seqs.iter().filter(|s| s.logits).count();
        if wanted != picks.len() {
            return Err(CudaError::Unsupported(format!(
                "{} picks for {wanted} sequences that want logits",
                picks.len()
            )));
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        if n > self.opts.max_rows || seqs.len() > self.opts.max_seqs {
            return Err(CudaError::Unsupported(format!(
                "{n} rows of {} sequences in one call (at most {} and {})",
                seqs.len(),
                self.opts.max_rows,
                self.opts.max_seqs
            )));
        }
        let decode = seqs.iter().all(|s| s.tokens.len() == 1 && s.logits);
        let bucket = GRAPH_BUCKETS.iter().copied().find(|&b| b >= n);
        match bucket {
            Some(b) if decode && self.opts.graphs => {
                self.upload_rows(seqs, b)?;
                if !self.graphs.contains_key(&b) {
                    let graph = self.gpu.capture(|| self.step(b, b, false))?;
                    self.graphs.insert(b, graph);
                }
                self.graphs[&b].launch()?;
            }
            _ => {
                self.upload_rows(seqs, n)?;
                self.step(n, wanted, !decode)?;
            }
        }
        self.pick(picks)
    }

    /// Writes the call's row tables; rows `n..padded` are padding that writes the scratch
    /// block. Fails on a block id or a table outside the cache.
    fn upload_rows(&self, seqs: &[SeqBatch], padded: usize) -> Result<(), CudaError> {
        // Tables are laid out at the stride of this call's longest, not the cache's limit,
        // so a step uploads a few bytes per sequence.
        let stride = seqs
            .iter()
            .map(|s| blocks_for(s.start + s.tokens.len()))
            .max()
            .unwrap_or(1)
            .max(1);
        let mut tokens = Vec::with_capacity(padded);
        let mut pos = Vec::with_capacity(padded);
        let mut table = Vec::with_capacity(padded);
        let mut tables = vec![self.blocks as i32; (seqs.len() + 1) * stride];
        let mut sel = Vec::new();
        for (i, sq) in seqs.iter().enumerate() {
            let used = blocks_for(sq.start + sq.tokens.len());
            if used > sq.blocks.len()
                || used > self.table_len
                || sq.blocks[..used].iter().any(|&b| b as usize >= self.blocks)
            {
                return Err(CudaError::Unsupported(format!(
                    "a block table of {} blocks for {} positions (cache: {} blocks)",
                    sq.blocks.len(),
                    sq.start + sq.tokens.len(),
                    self.blocks
                )));
            }
            for (slot, &b) in tables[i * stride..].iter_mut().zip(&sq.blocks[..used]) {
                *slot = b as i32;
            }
            for (j, &t) in sq.tokens.iter().enumerate() {
                tokens.push(t as i32);
                pos.push((sq.start + j) as i32);
                table.push((i * stride) as i32);
            }
            if sq.logits {
                sel.push(tokens.len() as i32 - 1);
            }
        }
        let pad_table = (seqs.len() * stride) as i32;
        while tokens.len() < padded {
            tokens.push(0);
            pos.push(0);
            table.push(pad_table);
        }
        let g = &self.gpu;
        g.write(self.s.tokens.ptr, &tokens)?;
        g.write(self.s.pos.ptr, &pos)?;
        g.write(self.s.table.ptr, &table)?;
        g.write(self.s.tables.ptr, &tables)?;
        g.write(self.s.sel.ptr, &sel)
    }

    /// The kernels of one forward pass over `n` rows; logits for `n_logits` rows (the
    /// rows in `sel` when `gather`, else the first ones), and every logits row's argmax.
    fn step(&self, n: usize, n_logits: usize, gather: bool) -> Result<(), CudaError> {
        let (g, c, s) = (&self.gpu, &self.cfg, &self.s);
        let (e, h) = (c.n_embd, self.heads());
        let (qd, kd) = (c.n_head * h.head_dim, c.kv_dim_k());
        let rows = Rows {
            n,
            pos: s.pos.ptr,
            table: s.table.ptr,
            tables: s.tables.ptr,
        };
        let nsplit = ops::splits(g.sms, n, c.n_head);
        ops::embed(g, &self.token_embd, s.tokens.ptr, n, s.x.ptr)?;
        for l in &self.layers {
            let x_in = |norm: &DevBuf| Input {
                ptr: s.x.ptr,
                ld: e,
                ncols: n,
                norm: Some((norm.ptr, c.rms_eps)),
            };
            for (m, col) in &l.qkv {
                ops::matvec(
                    g,
                    m,
                    x_in(&l.attn_norm),
                    s.qkv.at(col * 4),
                    qd + 2 * kd,
                    Epilogue::Store,
                )?;
            }
            let ptr = |b: &Option<DevBuf>| b.as_ref().map_or(0, |b| b.ptr);
            ops::qkv_post(
                g,
                s.qkv.ptr,
                ptr(&l.qkv_bias),
                ptr(&l.q_norm),
                ptr(&l.k_norm),
                c.rms_eps,
                self.rope(),
                rows,
                h,
                s.q.ptr,
                l.k_cache.ptr,
                l.v_cache.ptr,
            )?;
            ops::attention(
                g,
                s.q.ptr,
                l.k_cache.ptr,
                l.v_cache.ptr,
                rows,
                h,
                nsplit,
                s.partial.ptr,
                s.counters.ptr,
                s.attn.ptr,
            )?;
            let attn = Input {
                ptr: s.attn.ptr,
                ld: qd,
                ncols: n,
                norm: None,
            };
            ops::matvec(g, &l.wo, attn, s.x.ptr, e, Epilogue::Add)?;
            match &l.gate_up {
                GateUp::Stacked(m) => ops::matvec(
                    g,
                    m,
                    x_in(&l.ffn_norm),
                    s.gate.ptr,
                    c.n_ff,
                    Epilogue::Swiglu,
                )?,
                GateUp::Split(gate, up) => {
                    ops::matvec(
                        g,
                        gate,
                        x_in(&l.ffn_norm),
                        s.gate.ptr,
                        c.n_ff,
                        Epilogue::Store,
                    )?;
                    ops::matvec(g, up, x_in(&l.ffn_norm), s.up.ptr, c.n_ff, Epilogue::Store)?;
                    ops::swiglu(g, s.gate.ptr, s.up.ptr, n * c.n_ff)?;
                }
            }
            let gated = Input {
                ptr: s.gate.ptr,
                ld: c.n_ff,
                ncols: n,
                norm: None,
            };
            ops::matvec(g, &l.down, gated, s.x.ptr, e, Epilogue::Add)?;
        }
        if n_logits == 0 {
            return Ok(());
        }
        let last = if gather {
            ops::gather_rows(g, s.x.ptr, s.sel.ptr, n_logits, e, s.x_sel.ptr)?;
            s.x_sel.ptr
        } else {
            s.x.ptr
        };
        let input = Input {
            ptr: last,
            ld: e,
            ncols: n_logits,
            norm: Some((self.output_norm.ptr, c.rms_eps)),
        };
        ops::matvec(
            g,
            &self.output,
            input,
            s.logits.ptr,
            c.vocab_size,
            Epilogue::Store,
        )?;
        ops::argmax_rows(g, s.logits.ptr, n_logits, c.vocab_size, s.ids.ptr)
    }

    /// Brings back each logits row's pick (rows in order).
    fn pick(&self, picks: &[Pick]) -> Result<Vec<Picked>, CudaError> {
        let (g, v) = (&self.gpu, self.cfg.vocab_size);
        let ids: Vec<i32> = g.read(self.s.ids.ptr, picks.len())?;
        let mut out = Vec::with_capacity(picks.len());
        for (i, (&p, &id)) in picks.iter().zip(&ids).enumerate() {
            let row = self.s.logits.at(i * v * 4);
            out.push(match p {
                Pick::Argmax => Picked::Token(id as u32),
                Pick::TopK(k) => {
                    let k = k.clamp(1, ops::TOPK_MAX.min(v));
                    ops::topk_rows(g, row, 1, v, k, self.s.topk_ids.ptr, self.s.topk_vals.ptr)?;
                    let ids: Vec<i32> = g.read(self.s.topk_ids.ptr, k)?;
                    let vals: Vec<f32> = g.read(self.s.topk_vals.ptr, k)?;
                    Picked::TopK(ids.into_iter().map(|i| i as u32).zip(vals).collect())
                }
                Pick::Logits => Picked::Logits(g.read(row, v)?),
            });
        }
        Ok(out)
    }

    /// Runs `tokens` at positions `start..` of one sequence whose cache blocks are `blocks`
    /// (prompts longer than a call are split), returning the last token's pick.
    pub fn run_sequence(
        &mut self,
        blocks: &[u32],
        start: usize,
        tokens: &[u32],
        pick: Pick,
    ) -> Result<Picked, CudaError> {
        let mut at = start;
        let mut last = None;
        let chunk = self.opts.max_rows;
        for (i, part) in tokens.chunks(chunk).enumerate() {
            let logits = (i + 1) * chunk >= tokens.len();
            let seq = SeqBatch {
                tokens: part,
                start: at,
                blocks,
                slot: 0,
                logits,
                images: None,
            };
            let picks: &[Pick] = if logits {
                std::slice::from_ref(&pick)
            } else {
                &[]
            };
            last = self.forward(&[seq], picks)?.pop();
            at += part.len();
        }
        last.ok_or_else(|| CudaError::Unsupported("an empty sequence".into()))
    }
}

/// Token embeddings of a type the matrix kernels lack (F32/F16) are still looked up by
/// the embedding kernel, which dequantizes any of them.
fn embed_as_f32(gpu: &Gpu, w: &Weight) -> Result<GpuMat, CudaError> {
    if !matches!(ops::type_id(w.ty), 0 | 1) {
        return upload_mat(gpu, w);
    }
    Ok(GpuMat {
        buf: gpu.upload(w.data())?,
        ty: w.ty,
        rows: w.rows,
        cols: w.cols,
    })
}
