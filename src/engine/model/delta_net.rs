//! The Gated DeltaNet mixer of qwen35moe's recurrent layers, as llama.cpp's
//! `build_layer_attn_linear` computes it: projections of the normed rows to q/k/v, the
//! output gate z, the write strength beta and the decay g; a causal convolution over q/k/v
//! with SiLU; L2-normalised q and k; the delta rule over a per-sequence state; then a
//! per-head RMSNorm gated by SiLU(z) and the output projection.
//!
//! The state (the convolution's last inputs and one matrix per value head) lives in the
//! sequence's slot of the [`KvStore`] and is carried from one call to the next, so a prompt
//! may be computed in any chunks.

use super::weights::DeltaNetWeights;
use super::{Model, SeqBatch};
use crate::engine::backend::{Arithmetic, Backend, DeltaRule, DeltaShape, MatmulJob};
use crate::engine::kv::KvStore;

/// The layer's output for every row of `h` (the attention-normed hidden states), to be
/// added to the residual stream.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    model: &Model,
    be: &dyn Backend,
    kv: &mut KvStore,
    layer: usize,
    w: &DeltaNetWeights,
    seqs: &[SeqBatch],
    h: &[f32],
    arith: Arithmetic,
) -> Vec<f32> {
    let c = &model.config;
    let d = c
        .delta_net
        .as_ref()
        .expect("delta-net layers only in hybrid models");
    let n = h.len() / c.n_embd;
    let (conv_dim, key_dim, value_dim, hv) =
        (d.conv_dim(), d.key_dim(), d.value_dim(), d.n_v_heads);
    let mut qkv = vec![0.0; n * conv_dim];
    let mut z = vec![0.0; n * value_dim];
    let mut beta = vec![0.0; n * hv];
    let mut g = vec![0.0; n * hv];
    be.matmul(
        h,
        n,
        &mut [
            MatmulJob {
                w: &w.qkv,
                out: &mut qkv,
            },
            MatmulJob {
                w: &w.z,
                out: &mut z,
            },
            MatmulJob {
                w: &w.beta,
                out: &mut beta,
            },
            MatmulJob {
                w: &w.alpha,
                out: &mut g,
            },
        ],
        arith,
    );
    be.sigmoid(&mut beta);
    for row in g.chunks_exact_mut(hv) {
        for ((g, &bias), &a) in row.iter_mut().zip(&w.dt_bias).zip(&w.a) {
            *g = softplus(*g + bias) * a;
        }
    }

    let conv_state = (d.conv_kernel - 1) * conv_dim;
    let shape = DeltaShape {
        n_k_heads: d.n_k_heads,
        n_v_heads: hv,
        head_dim: d.head_dim,
    };
    let mut core = vec![0.0; n * value_dim];
    let mut row = 0;
    for sq in seqs {
        let rows = row..row + sq.tokens.len();
        row = rows.end;
        let state = &mut kv.state_mut(sq.slot)[layer * d.state_len()..][..d.state_len()];
        let (conv, ssm) = state.split_at_mut(conv_state);
        let mut mixed = vec![0.0; rows.len() * conv_dim];
        be.ssm_conv(
            &qkv[rows.start * conv_dim..rows.end * conv_dim],
            conv_dim,
            &w.conv,
            conv,
            &mut mixed,
        );
        be.silu(&mut mixed, conv_dim);
        let (mut q, mut k, mut v) = (
            Vec::with_capacity(rows.len() * key_dim),
            Vec::with_capacity(rows.len() * key_dim),
            Vec::with_capacity(rows.len() * value_dim),
        );
        for t in mixed.chunks_exact(conv_dim) {
            q.extend_from_slice(&t[..key_dim]);
            k.extend_from_slice(&t[key_dim..2 * key_dim]);
            v.extend_from_slice(&t[2 * key_dim..]);
        }
        be.l2_norm(&mut q, d.head_dim, c.rms_eps);
        be.l2_norm(&mut k, d.head_dim, c.rms_eps);
        be.delta_rule(DeltaRule {
            shape,
            q: &q,
            k: &k,
            v: &v,
            g: &g[rows.start * hv..rows.end * hv],
            beta: &beta[rows.start * hv..rows.end * hv],
            state: ssm,
            out: &mut core[rows.start * value_dim..rows.end * value_dim],
        });
    }

    be.rms_norm(&mut core, d.head_dim, &w.norm, c.rms_eps);
    be.silu(&mut z, d.head_dim);
    core.iter_mut().zip(&z).for_each(|(o, z)| *o *= z);
    let mut out = vec![0.0; n * c.n_embd];
    be.matmul(
        &core,
        n,
        &mut [MatmulJob {
            w: &w.out,
            out: &mut out,
        }],
        arith,
    );
    out
}

/// ggml's `softplus`: `log(1 + exp(x))`, or `x` itself past 20.
fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        (1.0 + x.exp()).ln()
    }
}
