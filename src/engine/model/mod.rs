//! The decoder forward pass for llama, qwen2, qwen3, qwen3moe and the qwen35moe hybrid,
//! written once over the [`Backend`] trait.

pub mod config;
mod delta_net;
pub mod weights;

use std::path::Path;

use crate::engine::backend::{Arithmetic, AttentionShape, Backend, MatmulJob, SeqAttention};
use crate::engine::gguf::GgufFile;
use crate::engine::kv::{KvCache, KvStore};
use crate::engine::vision::spans::ImageSpans;
use crate::engine::EngineError;
use config::{text_pos, ModelConfig, RopePos};
use weights::{AttentionWeights, Ffn, Mixer, SharedExpert, Weights};

/// Tokens per forward call for long prompts; llama.cpp's default micro-batch, which also
/// decides which attention arithmetic it uses, so matching it keeps outputs identical.
pub const UBATCH: usize = 512;

/// One sequence's part of a batched forward call.
#[derive(Debug, Clone, Copy)]
pub struct SeqBatch<'a> {
    pub tokens: &'a [u32],
    /// Position of the first token; the cache holds the sequence's earlier positions.
    pub start: usize,
    /// The sequence's block table, covering positions up to `start + tokens.len()`.
    pub blocks: &'a [u32],
    /// The sequence's recurrent-state slot in the store (hybrid models); a call with
    /// `start == 0` begins it afresh.
    pub slot: usize,
    /// Whether to return logits for the last token.
    pub logits: bool,
    /// The sequence's image runs: their rows take the image embeddings in place of the
    /// placeholder tokens, and set every row's rotary position.
    pub images: Option<&'a ImageSpans>,
}

impl SeqBatch<'_> {
    /// The rotary position of each of this call's rows.
    fn positions(&self) -> impl Iterator<Item = RopePos> + '_ {
        (self.start..self.start + self.tokens.len()).map(|j| match self.images {
            Some(im) => im.pos(j),
            None => text_pos(j),
        })
    }
}

pub struct Model {
    pub config: ModelConfig,
    pub weights: Weights,
    pub file: GgufFile,
}

/// Reusable activation buffers for one forward call.
struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    ffn_out: Vec<f32>,
}

impl Model {
    pub fn load(path: impl AsRef<Path>) -> Result<Self, EngineError> {
        let file = GgufFile::open(path)?;
        let config = ModelConfig::from_gguf(&file)?;
        let weights = Weights::load(&file, &config)?;
        Ok(Self {
            config,
            weights,
            file,
        })
    }

    /// Lets `be` get every weight matrix ready (see [`Backend::prepare`]), so the first
    /// forward pass runs at full speed.
    pub fn prepare(&self, be: &dyn Backend) {
        be.prepare(&self.weights.matrices());
    }

    /// A KV cache for one sequence of at most `max_len` positions (the model's context
    /// length when `None`).
    pub fn new_cache(&self, max_len: Option<usize>) -> KvCache {
        KvCache::new(
            self.new_store(),
            max_len.unwrap_or(self.config.context_length),
        )
    }

    /// A store for the blocks (and recurrent states) of many sequences. Only attention
    /// layers have blocks.
    pub fn new_store(&self) -> KvStore {
        let c = &self.config;
        KvStore::new(c.attention_layers(), c.kv_dim_k(), c.kv_dim_v())
            .with_recurrent(c.recurrent_state_len())
    }

    /// Runs `tokens` at the next positions of one sequence's `cache`, as llama.cpp does
    /// (micro-batches of [`UBATCH`], [`Arithmetic::Llama`]), and returns the last token's
    /// logits. Fails without touching the cache if the context limit would be passed.
    pub fn forward(
        &self,
        be: &dyn Backend,
        cache: &mut KvCache,
        tokens: &[u32],
    ) -> Result<Vec<f32>, EngineError> {
        self.forward_with_images(be, cache, tokens, None)
    }

    /// [`Model::forward`] for a sequence with image runs (`images` indexes the whole
    /// sequence; the runs among `tokens` must be encoded).
    pub fn forward_with_images(
        &self,
        be: &dyn Backend,
        cache: &mut KvCache,
        tokens: &[u32],
        images: Option<&ImageSpans>,
    ) -> Result<Vec<f32>, EngineError> {
        self.check_tokens(tokens)?;
        cache.reserve(tokens.len())?;
        let mut logits = Vec::new();
        for (i, chunk) in tokens.chunks(UBATCH).enumerate() {
            let last = (i + 1) * UBATCH >= tokens.len();
            let start = cache.len();
            let (store, blocks) = cache.parts();
            let seq = SeqBatch {
                tokens: chunk,
                start,
                blocks,
                slot: 0,
                logits: last,
                images,
            };
            logits = self
                .forward_batch(be, store, &[seq], Arithmetic::Llama)
                .pop()
                .unwrap_or_default();
            cache.advance(chunk.len());
        }
        Ok(logits)
    }

    /// Fails on a token id outside the vocabulary.
    pub fn check_tokens(&self, tokens: &[u32]) -> Result<(), EngineError> {
        let vocab = self.config.vocab_size;
        match tokens.iter().find(|&&t| t as usize >= vocab) {
            Some(&bad) => Err(EngineError::BadToken { token: bad, vocab }),
            None => Ok(()),
        }
    }

    /// One forward pass over several sequences' tokens at once: every weight is read once
    /// for all rows. Each sequence's keys and values are written into `kv` through its block
    /// table (whose blocks must exist). Returns the logits of each sequence that asked, in
    /// order. Token ids must be valid ([`Model::check_tokens`]).
    pub fn forward_batch(
        &self,
        be: &dyn Backend,
        kv: &mut KvStore,
        seqs: &[SeqBatch],
        arith: Arithmetic,
    ) -> Vec<Vec<f32>> {
        let c = &self.config;
        let n: usize = seqs.iter().map(|s| s.tokens.len()).sum();
        if n == 0 {
            return Vec::new();
        }
        let q_dim = c.n_head * c.head_dim_k;
        let ff = c.moe.map_or(c.n_ff, |m| m.n_ff_expert);
        let mut s = Scratch {
            x: vec![0.0; n * c.n_embd],
            h: vec![0.0; n * c.n_embd],
            q: vec![0.0; n * q_dim],
            k: vec![0.0; n * c.kv_dim_k()],
            v: vec![0.0; n * c.kv_dim_v()],
            attn: vec![0.0; n * c.n_head * c.head_dim_v],
            o: vec![0.0; n * c.n_embd],
            gate: vec![0.0; n * ff],
            up: vec![0.0; n * ff],
            ffn_out: vec![0.0; n * c.n_embd],
        };
        let rows = seqs
            .iter()
            .flat_map(|s| s.tokens.iter().enumerate().map(move |(i, &t)| (s, i, t)));
        for (row, (sq, i, t)) in s.x.chunks_exact_mut(c.n_embd).zip(rows) {
            match sq
                .images
                .and_then(|im| im.embedding(sq.start + i, c.n_embd))
            {
                Some(e) => row.copy_from_slice(e),
                None => self.weights.token_embd.dequantize_row_into(t as usize, row),
            }
        }
        let positions: Vec<RopePos> = seqs.iter().flat_map(SeqBatch::positions).collect();

        if c.delta_net.is_some() {
            for sq in seqs.iter().filter(|sq| sq.start == 0) {
                kv.state_mut(sq.slot).fill(0.0);
            }
        }
        let n_layer = self.weights.layers.len();
        let (mut kv_layer, mut recurrent_layer) = (0, 0);
        for (il, lw) in self.weights.layers.iter().enumerate() {
            s.h.copy_from_slice(&s.x);
            be.rms_norm(&mut s.h, c.n_embd, &lw.attn_norm, c.rms_eps);
            match &lw.mixer {
                Mixer::Attention(a) => {
                    self.attention(be, kv, kv_layer, a, seqs, &positions, arith, &mut s);
                    kv_layer += 1;
                }
                Mixer::DeltaNet(d) => {
                    let out =
                        delta_net::forward(self, be, kv, recurrent_layer, d, seqs, &s.h, arith);
                    s.x.iter_mut().zip(&out).for_each(|(x, o)| *x += o);
                    recurrent_layer += 1;
                }
            }
            if il + 1 < n_layer {
                self.ffn_block(be, lw, n, arith, &mut s);
            }
        }

        // As llama.cpp does, the last layer's feed-forward runs only for the rows that give
        // logits.
        let e = c.n_embd;
        let mut picked = 0;
        let mut end = 0;
        for sq in seqs {
            end += sq.tokens.len();
            if sq.logits {
                s.x.copy_within((end - 1) * e..end * e, picked * e);
                picked += 1;
            }
        }
        if picked == 0 {
            return Vec::new();
        }
        self.ffn_block(be, &self.weights.layers[n_layer - 1], picked, arith, &mut s);
        let last = &mut s.x[..picked * e];
        be.rms_norm(last, c.n_embd, &self.weights.output_norm, c.rms_eps);
        let mut logits = vec![0.0; picked * c.vocab_size];
        be.matmul(
            last,
            picked,
            &mut [MatmulJob {
                w: &self.weights.output,
                out: &mut logits,
            }],
            arith,
        );
        logits
            .chunks_exact(c.vocab_size)
            .map(<[f32]>::to_vec)
            .collect()
    }

    /// The feed-forward half of a layer for the first `n` rows of the scratch, added into `x`.
    fn ffn_block(
        &self,
        be: &dyn Backend,
        lw: &weights::LayerWeights,
        n: usize,
        arith: Arithmetic,
        s: &mut Scratch,
    ) {
        let c = &self.config;
        let e = c.n_embd;
        let ff = c.moe.map_or(c.n_ff, |m| m.n_ff_expert);
        let (x, h, out) = (
            &mut s.x[..n * e],
            &mut s.h[..n * e],
            &mut s.ffn_out[..n * e],
        );
        h.copy_from_slice(x);
        be.rms_norm(h, e, &lw.ffn_norm, c.rms_eps);
        match &lw.ffn {
            Ffn::Dense { gate, up, down } => {
                let (g, u) = (&mut s.gate[..n * ff], &mut s.up[..n * ff]);
                be.matmul(
                    h,
                    n,
                    &mut [MatmulJob { w: gate, out: g }, MatmulJob { w: up, out: u }],
                    arith,
                );
                be.swiglu(g, u);
                be.matmul(g, n, &mut [MatmulJob { w: down, out }], arith);
            }
            Ffn::Moe {
                router,
                gate,
                up,
                down,
                shared,
            } => {
                self.moe(be, h, n, router, gate, up, down, arith, out);
                if let Some(sh) = shared {
                    shared_expert(be, sh, h, n, arith, out);
                }
            }
        }
        x.iter_mut().zip(out.iter()).for_each(|(x, y)| *x += y);
    }

    /// The attention mixer of one layer over the normed rows in `s.h`, added into `s.x`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        be: &dyn Backend,
        kv: &mut KvStore,
        kv_layer: usize,
        lw: &AttentionWeights,
        seqs: &[SeqBatch],
        positions: &[RopePos],
        arith: Arithmetic,
        s: &mut Scratch,
    ) {
        let c = &self.config;
        let n = positions.len();
        let q_dim = c.n_head * c.head_dim_k;
        // A gated layer's query projection holds each head's queries, then its gate.
        let mut qg = vec![0.0; if lw.gated { 2 * n * q_dim } else { 0 }];
        be.matmul(
            &s.h,
            n,
            &mut [
                MatmulJob {
                    w: &lw.wq,
                    out: if lw.gated { &mut qg } else { &mut s.q },
                },
                MatmulJob {
                    w: &lw.wk,
                    out: &mut s.k,
                },
                MatmulJob {
                    w: &lw.wv,
                    out: &mut s.v,
                },
            ],
            arith,
        );
        let mut gate = Vec::new();
        if lw.gated {
            gate.reserve(n * q_dim);
            let hd = c.head_dim_k;
            for (head, q) in qg.chunks_exact(2 * hd).zip(s.q.chunks_exact_mut(hd)) {
                q.copy_from_slice(&head[..hd]);
                gate.extend_from_slice(&head[hd..]);
            }
            be.sigmoid(&mut gate);
        }
        for (buf, bias) in [(&mut s.q, &lw.bq), (&mut s.k, &lw.bk), (&mut s.v, &lw.bv)] {
            if let Some(b) = bias {
                for row in buf.chunks_exact_mut(b.len()) {
                    row.iter_mut().zip(b).for_each(|(x, b)| *x += b);
                }
            }
        }
        if let Some(w) = &lw.q_norm {
            be.rms_norm(&mut s.q, c.head_dim_k, w, c.rms_eps);
        }
        if let Some(w) = &lw.k_norm {
            be.rms_norm(&mut s.k, c.head_dim_k, w, c.rms_eps);
        }
        let ff = self.weights.rope_freqs.as_deref();
        be.rope(&mut s.q, c.head_dim_k, positions, &c.rope, ff);
        be.rope(&mut s.k, c.head_dim_k, positions, &c.rope, ff);
        let (dk, dv) = (c.kv_dim_k(), c.kv_dim_v());
        let mut row = 0;
        for sq in seqs {
            let r = row..row + sq.tokens.len();
            kv.write(
                kv_layer,
                sq.blocks,
                sq.start,
                &s.k[r.start * dk..r.end * dk],
                &s.v[r.start * dv..r.end * dv],
            );
            row = r.end;
        }
        let views: Vec<SeqAttention> = seqs
            .iter()
            .map(|sq| SeqAttention {
                kv: kv.view(kv_layer, sq.blocks),
                shape: AttentionShape {
                    n_head: c.n_head,
                    n_head_kv: c.n_head_kv,
                    head_dim_k: c.head_dim_k,
                    head_dim_v: c.head_dim_v,
                    start: sq.start,
                    n_tokens: sq.tokens.len(),
                    causal: true,
                },
            })
            .collect();
        be.attention(&s.q, &views, arith, &mut s.attn);
        if lw.gated {
            s.attn.iter_mut().zip(&gate).for_each(|(a, g)| *a *= g);
        }
        be.matmul(
            &s.attn,
            n,
            &mut [MatmulJob {
                w: &lw.wo,
                out: &mut s.o,
            }],
            arith,
        );
        s.x.iter_mut().zip(&s.o).for_each(|(x, o)| *x += o);
    }

    /// Mixture of experts: softmax over the router, keep the top k, renormalise their weights
    /// to sum to 1, and add the weighted expert outputs in rank order (as llama.cpp does).
    #[allow(clippy::too_many_arguments)]
    fn moe(
        &self,
        be: &dyn Backend,
        h: &[f32],
        n: usize,
        router: &weights::Weight,
        gate: &[weights::Weight],
        up: &[weights::Weight],
        down: &[weights::Weight],
        arith: Arithmetic,
        out: &mut [f32],
    ) {
        let c = &self.config;
        let m = c.moe.expect("moe layers only in moe models");
        let mut logits = vec![0.0; n * m.n_expert];
        be.matmul(
            h,
            n,
            &mut [MatmulJob {
                w: router,
                out: &mut logits,
            }],
            arith,
        );
        // routes[t] = [(expert, weight)] in rank order.
        let routes: Vec<Vec<(usize, f32)>> = logits
            .chunks_exact(m.n_expert)
            .map(|l| route(l, m.n_expert_used))
            .collect();

        out.fill(0.0);
        let mut expert_out = vec![vec![0.0f32; c.n_embd]; n * m.n_expert_used];
        for e in 0..m.n_expert {
            // Tokens routed to expert e, and the rank it holds for each.
            let picked: Vec<(usize, usize)> = routes
                .iter()
                .enumerate()
                .filter_map(|(t, r)| r.iter().position(|&(x, _)| x == e).map(|rank| (t, rank)))
                .collect();
            if picked.is_empty() {
                continue;
            }
            let k = picked.len();
            let mut xin = Vec::with_capacity(k * c.n_embd);
            for &(t, _) in &picked {
                xin.extend_from_slice(&h[t * c.n_embd..(t + 1) * c.n_embd]);
            }
            let mut g = vec![0.0; k * m.n_ff_expert];
            let mut u = vec![0.0; k * m.n_ff_expert];
            be.matmul(
                &xin,
                k,
                &mut [
                    MatmulJob {
                        w: &gate[e],
                        out: &mut g,
                    },
                    MatmulJob {
                        w: &up[e],
                        out: &mut u,
                    },
                ],
                arith,
            );
            be.swiglu(&mut g, &u);
            let mut y = vec![0.0; k * c.n_embd];
            be.matmul(
                &g,
                k,
                &mut [MatmulJob {
                    w: &down[e],
                    out: &mut y,
                }],
                arith,
            );
            for (i, &(t, rank)) in picked.iter().enumerate() {
                expert_out[t * m.n_expert_used + rank]
                    .copy_from_slice(&y[i * c.n_embd..(i + 1) * c.n_embd]);
            }
        }
        for t in 0..n {
            let o = &mut out[t * c.n_embd..(t + 1) * c.n_embd];
            for (rank, &(_, w)) in routes[t].iter().enumerate() {
                let y = &expert_out[t * m.n_expert_used + rank];
                o.iter_mut().zip(y).for_each(|(o, y)| *o += y * w);
            }
        }
    }
}

/// Adds the shared expert's SwiGLU output for each of the `n` rows of `h` into `out`,
/// scaled by `sigmoid(gate_inp · h)`, as qwen35moe does after its routed experts.
fn shared_expert(
    be: &dyn Backend,
    sh: &SharedExpert,
    h: &[f32],
    n: usize,
    arith: Arithmetic,
    out: &mut [f32],
) {
    let (ff, e) = (sh.gate.rows, sh.down.rows);
    let (mut g, mut u, mut y, mut scale) = (
        vec![0.0; n * ff],
        vec![0.0; n * ff],
        vec![0.0; n * e],
        vec![0.0; n],
    );
    be.matmul(
        h,
        n,
        &mut [
            MatmulJob {
                w: &sh.gate,
                out: &mut g,
            },
            MatmulJob {
                w: &sh.up,
                out: &mut u,
            },
            MatmulJob {
                w: &sh.gate_inp,
                out: &mut scale,
            },
        ],
        arith,
    );
    be.swiglu(&mut g, &u);
    be.matmul(
        &g,
        n,
        &mut [MatmulJob {
            w: &sh.down,
            out: &mut y,
        }],
        arith,
    );
    be.sigmoid(&mut scale);
    for ((o, y), s) in out.chunks_exact_mut(e).zip(y.chunks_exact(e)).zip(&scale) {
        o.iter_mut().zip(y).for_each(|(o, y)| *o += y * s);
    }
}

/// Top-`k` experts of one token by softmax probability, weights renormalised to sum to 1.
fn route(logits: &[f32], k: usize) -> Vec<(usize, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    let mut p: Vec<f32> = logits
        .iter()
        .map(|&l| {
            let e = (l - max).exp();
            sum += e as f64;
            e
        })
        .collect();
    let inv = (1.0 / sum) as f32;
    p.iter_mut().for_each(|v| *v *= inv);
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    idx.truncate(k);
    let total: f32 = idx.iter().map(|&i| p[i]).sum();
    idx.into_iter().map(|i| (i, p[i] / total)).collect()
}
