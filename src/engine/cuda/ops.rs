//! One typed wrapper per kernel: grid shapes and argument order live here and nowhere else.
//! Pointers are raw device addresses (`u64`), so a caller can point into any buffer.

use super::gpu::{Arg, DevBuf, Gpu};
use super::CudaError;
use crate::engine::quant::GgmlType;

/// A weight matrix on the device in its GGUF block layout: `rows` rows of `cols` elements.
pub struct GpuMat {
    pub buf: DevBuf,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
}

impl GpuMat {
    /// Uploads `rows` rows of raw GGUF blocks.
    pub fn upload(
        gpu: &Gpu,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &[u8],
    ) -> Result<Self, CudaError> {
        if !supported(ty) {
            return Err(CudaError::Unsupported(format!(
                "{} matrices (supported: Q4_0, Q4_1, Q8_0, Q4_K, Q6_K, IQ4_XS)",
                ty.name()
            )));
        }
        if !cols.is_multiple_of(ty.block_elems()) || data.len() != rows * ty.row_bytes(cols) {
            return Err(CudaError::Unsupported(format!(
                "a {rows}x{cols} {} matrix of {} bytes",
                ty.name(),
                data.len()
            )));
        }
        Ok(Self {
            buf: gpu.upload(data)?,
            ty,
            rows,
            cols,
        })
    }

    pub fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.cols)
    }
}

/// The matrix kernels, one per weight type.
pub const MATVEC_KERNELS: [&str; 6] = [
    "matvec_q4_0",
    "matvec_q4_1",
    "matvec_q8_0",
    "matvec_q4_k",
    "matvec_q6_k",
    "matvec_iq4_xs",
];

/// Weight types the matrix kernels take.
pub fn supported(ty: GgmlType) -> bool {
    kernel_of(ty).is_some()
}

fn kernel_of(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::Q4_0 => MATVEC_KERNELS[0],
        GgmlType::Q4_1 => MATVEC_KERNELS[1],
        GgmlType::Q8_0 => MATVEC_KERNELS[2],
        GgmlType::Q4K => MATVEC_KERNELS[3],
        GgmlType::Q6K => MATVEC_KERNELS[4],
        GgmlType::IQ4XS => MATVEC_KERNELS[5],
        _ => return None,
    })
}

/// ggml's type id, which the kernels use.
pub fn type_id(ty: GgmlType) -> i32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 8,
        GgmlType::Q4K => 12,
        GgmlType::Q6K => 14,
        GgmlType::IQ4XS => 23,
        _ => -1,
    }
}

/// What a matrix kernel does with each result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    Store = 0,
    /// `out += result` (the residual stream).
    Add = 1,
    /// The matrix stacks gate rows over up rows; `out = silu(gate) * up`.
    Swiglu = 2,
}

/// Dynamic shared memory the matrix kernels may use (the 48 KiB default is raised to this).
pub const MATVEC_SHARED: usize = 96 * 1024;
const MV_WARPS: usize = 8;

/// Columns per block for inputs of `k` elements: up to 8, as shared memory allows.
fn cols_per_block(k: usize, ncols: usize) -> usize {
    let per_col = k + k / 32 * 12 + 16;
    (MATVEC_SHARED / per_col).clamp(1, 8).min(ncols.max(1))
}

/// Where a matrix kernel reads its `ncols` input columns (rows of `ld` floats).
#[derive(Clone, Copy)]
pub struct Input {
    pub ptr: u64,
    pub ld: usize,
    pub ncols: usize,
    /// RMS-normalise each column with these weights (and `eps`) before the product.
    pub norm: Option<(u64, f32)>,
}

/// `out[c * out_ld + r] (op)= w.row(r) . input[c]`.
pub fn matvec(
    gpu: &Gpu,
    w: &GpuMat,
    input: Input,
    out: u64,
    out_ld: usize,
    ep: Epilogue,
) -> Result<(), CudaError> {
    let name = kernel_of(w.ty).ok_or_else(|| CudaError::Unsupported(w.ty.name().into()))?;
    let k = w.cols;
    let cpb = cols_per_block(k, input.ncols);
    let n_out = if ep == Epilogue::Swiglu {
        w.rows / 2
    } else {
        w.rows
    };
    // Enough warps' worth of rows per block that the prologue is paid for a few times per
    // SM, not once per handful of rows.
    let rows_per_warp = (n_out / (MV_WARPS * gpu.sms * 4)).clamp(1, 16);
    let grid_x = n_out.div_ceil(MV_WARPS * rows_per_warp);
    let grid_y = input.ncols.div_ceil(cpb);
    let shared = (cpb * k).div_ceil(16) * 16 + cpb * (k / 32) * 12;
    let (norm, eps) = input.norm.unwrap_or((0, 0.0));
    gpu.launch(
        name,
        (grid_x as u32, grid_y as u32, 1),
        (MV_WARPS * 32) as u32,
        shared as u32,
        &[
            Arg::P(w.buf.ptr),
            Arg::L(w.row_bytes() as i64),
            Arg::I(w.rows as i32),
            Arg::I(k as i32),
            Arg::P(input.ptr),
            Arg::I(input.ld as i32),
            Arg::I(input.ncols as i32),
            Arg::P(norm),
            Arg::F(eps),
            Arg::P(out),
            Arg::I(out_ld as i32),
            Arg::I(ep as i32),
            Arg::I(rows_per_warp as i32),
            Arg::I(cpb as i32),
        ],
    )
}

/// `x[r] = dequantize(w.row(tokens[r]))` for `n` rows.
pub fn embed(gpu: &Gpu, w: &GpuMat, tokens: u64, n: usize, x: u64) -> Result<(), CudaError> {
    gpu.launch(
        "embed",
        (n as u32, 1, 1),
        256,
        0,
        &[
            Arg::P(w.buf.ptr),
            Arg::I(type_id(w.ty)),
            Arg::L(w.row_bytes() as i64),
            Arg::I(w.cols as i32),
            Arg::P(tokens),
            Arg::P(x),
        ],
    )
}

/// Where each row of a forward call sits: device arrays of `rows` ints (position, offset of
/// its sequence's block table in `tables`).
#[derive(Clone, Copy)]
pub struct Rows {
    pub n: usize,
    pub pos: u64,
    pub table: u64,
    pub tables: u64,
}

/// Shape of attention and of the step before it.
#[derive(Clone, Copy)]
pub struct Heads {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
}

/// RoPE parameters as the kernel takes them.
#[derive(Clone, Copy)]
pub struct Rope {
    pub n_rot: usize,
    pub neox: bool,
    pub theta_scale: f32,
    pub freq_scale: f32,
    pub freq_factors: u64,
}

/// Bias, per-head norms (pointers, 0 for none), RoPE, and the f16 cache write.
#[allow(clippy::too_many_arguments)]
pub fn qkv_post(
    gpu: &Gpu,
    qkv: u64,
    bias: u64,
    q_norm: u64,
    k_norm: u64,
    eps: f32,
    rope: Rope,
    rows: Rows,
    h: Heads,
    q_out: u64,
    k_cache: u64,
    v_cache: u64,
) -> Result<(), CudaError> {
    gpu.launch(
        "qkv_post",
        (rows.n as u32, 1, 1),
        256,
        0,
        &[
            Arg::P(qkv),
            Arg::P(bias),
            Arg::P(q_norm),
            Arg::P(k_norm),
            Arg::F(eps),
            Arg::P(rope.freq_factors),
            Arg::I(rope.n_rot as i32),
            Arg::I(rope.neox as i32),
            Arg::F(rope.theta_scale),
            Arg::F(rope.freq_scale),
            Arg::P(rows.pos),
            Arg::P(rows.table),
            Arg::P(rows.tables),
            Arg::I(h.n_head as i32),
            Arg::I(h.n_head_kv as i32),
            Arg::I(h.head_dim as i32),
            Arg::P(q_out),
            Arg::P(k_cache),
            Arg::P(v_cache),
        ],
    )
}

/// Most splits one (row, head) gets.
pub const MAX_SPLITS: usize = 32;

/// Splits per (row, head) so that a call fills the device about twice.
pub fn splits(sms: usize, rows: usize, n_head: usize) -> usize {
    (2 * sms).div_ceil(rows * n_head).clamp(1, MAX_SPLITS)
}

/// Floats of partial results `splits` needs for `rows` rows.
pub fn partial_floats(rows: usize, h: Heads, nsplit: usize) -> usize {
    rows * h.n_head * nsplit * (h.head_dim + 2)
}

/// Attention of `rows.n` query rows over the paged cache, `nsplit` ways per (row, head).
/// `counters` (one u32 per (row, head)) must be zero; the kernel leaves them zero.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    gpu: &Gpu,
    q: u64,
    k_cache: u64,
    v_cache: u64,
    rows: Rows,
    h: Heads,
    nsplit: usize,
    partial: u64,
    counters: u64,
    out: u64,
) -> Result<(), CudaError> {
    gpu.launch(
        "attention",
        (h.n_head as u32, rows.n as u32, nsplit as u32),
        128,
        0,
        &[
            Arg::P(q),
            Arg::P(k_cache),
            Arg::P(v_cache),
            Arg::P(rows.pos),
            Arg::P(rows.table),
            Arg::P(rows.tables),
            Arg::I(h.n_head as i32),
            Arg::I(h.n_head_kv as i32),
            Arg::I(h.head_dim as i32),
            Arg::F(1.0 / (h.head_dim as f32).sqrt()),
            Arg::I(nsplit as i32),
            Arg::P(partial),
            Arg::P(counters),
            Arg::P(out),
        ],
    )
}

/// `out[i] = x[idx[i]]` for `n` rows of `k` floats.
pub fn gather_rows(
    gpu: &Gpu,
    x: u64,
    idx: u64,
    n: usize,
    k: usize,
    out: u64,
) -> Result<(), CudaError> {
    gpu.launch(
        "gather_rows",
        (n as u32, 1, 1),
        256,
        0,
        &[Arg::P(x), Arg::P(idx), Arg::I(k as i32), Arg::P(out)],
    )
}

/// `g = silu(g) * u` over `n` floats.
pub fn swiglu(gpu: &Gpu, g: u64, u: u64, n: usize) -> Result<(), CudaError> {
    gpu.launch(
        "swiglu",
        (n.div_ceil(256) as u32, 1, 1),
        256,
        0,
        &[Arg::P(g), Arg::P(u), Arg::L(n as i64)],
    )
}

/// The index of each row's largest logit (the first of equals).
pub fn argmax_rows(
    gpu: &Gpu,
    logits: u64,
    rows: usize,
    vocab: usize,
    out: u64,
) -> Result<(), CudaError> {
    gpu.launch(
        "argmax_rows",
        (rows as u32, 1, 1),
        1024,
        0,
        &[Arg::P(logits), Arg::I(vocab as i32), Arg::P(out)],
    )
}

/// Most candidates [`topk_rows`] returns per row.
pub const TOPK_MAX: usize = 256;

/// Each row's `k` best (id, logit), by logit descending then id ascending.
pub fn topk_rows(
    gpu: &Gpu,
    logits: u64,
    rows: usize,
    vocab: usize,
    k: usize,
    ids: u64,
    vals: u64,
) -> Result<(), CudaError> {
    debug_assert!(k >= 1 && k <= TOPK_MAX.min(vocab));
    gpu.launch(
        "topk_rows",
        (rows as u32, 1, 1),
        1024,
        0,
        &[
            Arg::P(logits),
            Arg::I(vocab as i32),
            Arg::I(k as i32),
            Arg::P(ids),
            Arg::P(vals),
        ],
    )
}

/// An empty kernel (the launch floor).
pub fn noop(gpu: &Gpu) -> Result<(), CudaError> {
    gpu.launch("noop", (1, 1, 1), 32, 0, &[])
}
