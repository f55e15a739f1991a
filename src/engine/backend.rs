//! The operations a decoder forward pass needs, as a trait, so the model code is written once
//! and a CUDA backend can slot in beside the CPU one.
//!
//! Activations are row-major `f32` slices, one row per token. Weights stay in their GGUF
//! types; a backend decides how to multiply them (the CPU backend quantizes activations to
//! the weight type's partner format, as llama.cpp does).

use crate::engine::kv::KvView;
use crate::engine::model::config::{RopeConfig, RopePos};
use crate::engine::model::weights::Weight;

/// One matrix product of a batched matmul: `out[t][r] = w.row(r) · x[t]`.
pub struct MatmulJob<'a> {
    pub w: &'a Weight,
    pub out: &'a mut [f32],
}

/// How a forward call computes its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arithmetic {
    /// As llama.cpp computes one sequence's batch of this size (its kernels change with the
    /// batch size): outputs equal llama.cpp's bit for bit (`supernet generate`, `bench`).
    Llama,
    /// Every row as llama.cpp computes a one-token decode step, whatever shares the call:
    /// a sequence's logits depend only on its own tokens, never on its batch or on how its
    /// prompt was chunked (the batch scheduler).
    Invariant,
}

/// One sequence's query rows in an attention call, and its cache.
#[derive(Clone, Copy)]
pub struct SeqAttention<'a> {
    pub kv: KvView<'a>,
    pub shape: AttentionShape,
}

/// Shape of one sequence's attention over a layer's cache.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
    /// Position of the first query token; token `t` attends to cache rows `0..=start + t`
    /// when causal, to all `start + n_tokens` rows otherwise (a vision encoder).
    pub start: usize,
    pub n_tokens: usize,
    pub causal: bool,
}

impl AttentionShape {
    /// The last cache row that the query at position `pos` attends to.
    pub fn last_visible(&self, pos: usize) -> usize {
        if self.causal {
            pos
        } else {
            self.start + self.n_tokens - 1
        }
    }
}

/// Shape of a Gated DeltaNet layer's heads.
#[derive(Debug, Clone, Copy)]
pub struct DeltaShape {
    pub n_k_heads: usize,
    pub n_v_heads: usize,
    /// Width of every key and value head; each value head's state is this squared.
    pub head_dim: usize,
}

/// One sequence's rows through the delta rule of one layer.
pub struct DeltaRule<'a> {
    pub shape: DeltaShape,
    /// Per token: `n_k_heads` L2-normalised query heads.
    pub q: &'a [f32],
    /// Per token: `n_k_heads` L2-normalised key heads.
    pub k: &'a [f32],
    /// Per token: `n_v_heads` value heads.
    pub v: &'a [f32],
    /// Per token and value head: the log decay `g` (<= 0).
    pub g: &'a [f32],
    /// Per token and value head: the write strength `beta` in (0, 1).
    pub beta: &'a [f32],
    /// Per value head, the `head_dim`² state, stored transposed (`state[j * d + i]` is
    /// S[i][j]), carried over from the sequence's previous tokens and updated in place.
    pub state: &'a mut [f32],
    /// Per token: `n_v_heads` output heads.
    pub out: &'a mut [f32],
}

pub trait Backend: Send + Sync {
    /// A one-line description for logs and benchmarks (kernels, threads).
    fn describe(&self) -> String;

    /// Gets weights ready before the first forward pass (the CPU backend builds its
    /// interleaved copies). Optional: whatever is not prepared is prepared on first use.
    fn prepare(&self, _weights: &[&Weight]) {}

    /// Multiplies every job's weight by the same `n_tokens` input rows in one parallel pass.
    /// All weights must have `x.len() / n_tokens` columns.
    fn matmul(&self, x: &[f32], n_tokens: usize, jobs: &mut [MatmulJob<'_>], arith: Arithmetic);

    /// RMS-normalises each `dim`-wide row of `x` in place, then scales by `weight`.
    fn rms_norm(&self, x: &mut [f32], dim: usize, weight: &[f32], eps: f32);

    /// Rotates every `head_dim`-wide head of each token row by its position.
    fn rope(
        &self,
        x: &mut [f32],
        head_dim: usize,
        positions: &[RopePos],
        rope: &RopeConfig,
        freq_factors: Option<&[f32]>,
    );

    /// Causal attention of `q` (each sequence's `n_tokens` rows of `n_head * head_dim_k`,
    /// one sequence after the other) over each sequence's cache.
    fn attention(&self, q: &[f32], seqs: &[SeqAttention<'_>], arith: Arithmetic, out: &mut [f32]);

    /// `gate = silu(gate) * up`, element-wise.
    fn swiglu(&self, gate: &mut [f32], up: &[f32]);

    /// `x = silu(x)` over each `row`-wide row.
    fn silu(&self, x: &mut [f32], row: usize);

    /// `x = 1 / (1 + exp(-x))`, element-wise.
    fn sigmoid(&self, x: &mut [f32]);

    /// Scales each `dim`-wide row of `x` to unit L2 norm (`eps` guards a zero row).
    fn l2_norm(&self, x: &mut [f32], dim: usize, eps: f32);

    /// The causal depthwise convolution of one sequence's rows `x` (`channels` wide):
    /// `out[t][c] = sum_i window[t + i][c] * taps[c][i]`, where the window is the
    /// `taps / channels - 1` rows in `state` (oldest first) followed by `x`. `state` is left
    /// holding the last rows of the window.
    fn ssm_conv(
        &self,
        x: &[f32],
        channels: usize,
        taps: &[f32],
        state: &mut [f32],
        out: &mut [f32],
    );

    /// The gated delta rule over one sequence's tokens, one token after the other.
    fn delta_rule(&self, job: DeltaRule<'_>);
}
