//! The vision encoder's forward pass: patch embedding, position embeddings, the ViT blocks
//! and the projector, computed as llama.cpp's CPU graph computes them (`clip.cpp`'s
//! `build_vit`, `models/qwen3vl.cpp`, `models/siglip.cpp`).
//!
//! Matrices go through the [`Backend`] (llama.cpp's arithmetic for quantized weights);
//! attention through the backend's flash attention over an F16 store (llama.cpp casts the
//! encoder's keys and values to F16); the patch convolution, LayerNorm, GELU, the vision
//! RoPE and the position-embedding interpolation are written here in ggml's order.

use half::f16;

use super::preprocess::Planar;
use super::tower::{Block, Projection, Projector, Qkv, VisionConfig, VisionTower};
use crate::engine::backend::{Arithmetic, AttentionShape, Backend, MatmulJob, SeqAttention};
use crate::engine::cpu::ops::{dot_lanes_16, reduce_add_16};
use crate::engine::kv::{blocks_for, KvStore};
use crate::engine::model::weights::Weight;

/// One encoded input: `nx * ny` rows of the language model's width, row-major.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub rows: Vec<f32>,
    pub nx: usize,
    pub ny: usize,
}

impl VisionTower {
    /// Encodes one preprocessed input (an image, or one tile of it).
    pub fn encode(&self, be: &dyn Backend, img: &Planar) -> Encoded {
        let c = &self.config;
        let (px, py) = (img.width / c.patch_size, img.height / c.patch_size);
        let n = px * py;
        let e = c.n_embd;
        let mut x = self.embed_patches(img, px, py);
        for b in &self.weights.blocks {
            self.block(be, b, &mut x, n, px, py);
        }
        let (w, bias) = &self.weights.post_ln;
        layer_norm(&mut x, e, w, bias, c.eps);
        let (rows, nx, ny) = match &self.weights.projection {
            Projection::Merger { fc1, fc2 } => {
                // Rows are already in 2x2-block order: each block is one merged row.
                let m = n / 4;
                let mut h = vec![0.0; m * 4 * e];
                matmul_bias(be, &x, m, fc1, &mut h);
                gelu(&mut h);
                let mut out = vec![0.0; m * c.projection_dim];
                matmul_bias(be, &h, m, fc2, &mut out);
                (out, px / 2, py / 2)
            }
            Projection::Shuffle { fc } => {
                let s = c.merge;
                let shuffled = pixel_shuffle(&x, e, px, py, s);
                let m = shuffled.len() / (e * s * s);
                let mut out = vec![0.0; m * c.projection_dim];
                be.matmul(
                    &shuffled,
                    m,
                    &mut [MatmulJob {
                        w: fc,
                        out: &mut out,
                    }],
                    Arithmetic::Llama,
                );
                (out, px.div_ceil(s), py.div_ceil(s))
            }
        };
        Encoded { rows, nx, ny }
    }

    /// Patch embedding, its bias and the position embeddings, in the row order the blocks
    /// use (Qwen: each 2x2 block of patches consecutive; otherwise raster order).
    fn embed_patches(&self, img: &Planar, px: usize, py: usize) -> Vec<f32> {
        let c = &self.config;
        let w = &self.weights;
        let (e, p) = (c.n_embd, c.patch_size);
        let klen = 3 * p * p;
        let plane = img.width * img.height;
        let order = patch_order(c.projector, px, py);
        let mut col = vec![0.0f32; klen];
        let mut x = vec![0.0f32; order.len() * e];
        let pos = position_embeddings(c, &w.pos, px, py);
        for (row, &(xp, yp)) in x.chunks_exact_mut(e).zip(&order) {
            // im2col (into F16, as ggml_conv_2d makes it): channel, then row and column
            // within the patch; the product is tinyBLAS's (`dot_lanes_16`).
            for ch in 0..3 {
                for ky in 0..p {
                    let src = &img.data[ch * plane + (yp * p + ky) * img.width + xp * p..][..p];
                    for (d, &v) in col[(ch * p + ky) * p..][..p].iter_mut().zip(src) {
                        *d = f16::from_f32(v).to_f32();
                    }
                }
            }
            for (o, out) in row.iter_mut().enumerate() {
                let mut v = w.patch.iter().fold(None, |acc: Option<f32>, k| {
                    let d = dot_lanes_16(&col, &k[o * klen..][..klen]);
                    Some(acc.map_or(d, |a| a + d))
                });
                if let Some(v) = v.as_mut() {
                    *v += w.patch_bias[o];
                    *v += pos[(yp * px + xp) * e + o];
                }
                *out = v.unwrap_or_default();
            }
        }
        x
    }

    /// One pre-norm ViT block over `n` rows of `x`.
    fn block(&self, be: &dyn Backend, b: &Block, x: &mut [f32], n: usize, px: usize, py: usize) {
        let c = &self.config;
        let (e, d) = (c.n_embd, c.head_dim());
        let mut h = x.to_vec();
        layer_norm(&mut h, e, &b.ln1.0, &b.ln1.1, c.eps);
        let (mut q, mut k, mut v) = (vec![0.0; n * e], vec![0.0; n * e], vec![0.0; n * e]);
        match &b.qkv {
            Qkv::Fused(w, bias) => {
                let mut qkv = vec![0.0; n * 3 * e];
                be.matmul(
                    &h,
                    n,
                    &mut [MatmulJob { w, out: &mut qkv }],
                    Arithmetic::Llama,
                );
                for ((row, qr), (kr, vr)) in qkv
                    .chunks_exact_mut(3 * e)
                    .zip(q.chunks_exact_mut(e))
                    .zip(k.chunks_exact_mut(e).zip(v.chunks_exact_mut(e)))
                {
                    row.iter_mut().zip(bias).for_each(|(a, b)| *a += b);
                    qr.copy_from_slice(&row[..e]);
                    kr.copy_from_slice(&row[e..2 * e]);
                    vr.copy_from_slice(&row[2 * e..]);
                }
            }
            Qkv::Split([wq, wk, wv]) => {
                be.matmul(
                    &h,
                    n,
                    &mut [
                        MatmulJob {
                            w: &wq.0,
                            out: &mut q,
                        },
                        MatmulJob {
                            w: &wk.0,
                            out: &mut k,
                        },
                        MatmulJob {
                            w: &wv.0,
                            out: &mut v,
                        },
                    ],
                    Arithmetic::Llama,
                );
                for (buf, (_, bias)) in [(&mut q, wq), (&mut k, wk), (&mut v, wv)] {
                    for row in buf.chunks_exact_mut(e) {
                        row.iter_mut().zip(bias).for_each(|(a, b)| *a += b);
                    }
                }
            }
        }
        if c.projector == Projector::Qwen3Vl {
            let positions = merged_positions(px, py);
            rope_vision(&mut q, d, &positions);
            rope_vision(&mut k, d, &positions);
        }
        let mut attn = vec![0.0; n * e];
        let blocks: Vec<u32> = (0..blocks_for(n) as u32).collect();
        let mut store = KvStore::new(1, e, e);
        store.grow_to(blocks.len());
        store.write(0, &blocks, 0, &k, &v);
        let shape = AttentionShape {
            n_head: c.n_head,
            n_head_kv: c.n_head,
            head_dim_k: d,
            head_dim_v: d,
            start: 0,
            n_tokens: n,
            causal: false,
        };
        be.attention(
            &q,
            &[SeqAttention {
                kv: store.view(0, &blocks),
                shape,
            }],
            Arithmetic::Llama,
            &mut attn,
        );
        let mut o = vec![0.0; n * e];
        matmul_bias(be, &attn, n, &b.out, &mut o);
        x.iter_mut().zip(&o).for_each(|(x, o)| *x += *o);
        h.copy_from_slice(x);
        layer_norm(&mut h, e, &b.ln2.0, &b.ln2.1, c.eps);
        let mut up = vec![0.0; n * c.n_ff];
        matmul_bias(be, &h, n, &b.up, &mut up);
        gelu(&mut up);
        matmul_bias(be, &up, n, &b.down, &mut o);
        x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);
    }
}

/// `out = x · w + bias` over `n` rows.
fn matmul_bias(
    be: &dyn Backend,
    x: &[f32],
    n: usize,
    (w, bias): &(Weight, Vec<f32>),
    out: &mut [f32],
) {
    be.matmul(
        x,
        n,
        &mut [MatmulJob { w, out: &mut *out }],
        Arithmetic::Llama,
    );
    for row in out.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(a, b)| *a += b);
    }
}

/// The patches in the order the encoder's rows take: Qwen's merger wants each 2x2 block of
/// patches consecutive (`models/qwen3vl.cpp`'s spatial-merge permutation).
fn patch_order(projector: Projector, px: usize, py: usize) -> Vec<(usize, usize)> {
    match projector {
        Projector::Qwen3Vl => {
            let mut o = Vec::with_capacity(px * py);
            for yb in 0..py / 2 {
                for xb in 0..px / 2 {
                    for dy in 0..2 {
                        for dx in 0..2 {
                            o.push((2 * xb + dx, 2 * yb + dy));
                        }
                    }
                }
            }
            o
        }
        Projector::Idefics3 => (0..py).flat_map(|y| (0..px).map(move |x| (x, y))).collect(),
    }
}

/// The (y, x, y, x) vision-RoPE positions of [`patch_order`]'s Qwen rows.
fn merged_positions(px: usize, py: usize) -> Vec<[u32; 4]> {
    patch_order(Projector::Qwen3Vl, px, py)
        .into_iter()
        .map(|(x, y)| [y as u32, x as u32, y as u32, x as u32])
        .collect()
}

/// The position embeddings for a `px` x `py` grid, raster order: the trained square grid,
/// or (Qwen, at any other size) its bilinear interpolation with aligned corners, as
/// `ggml_interpolate` computes it.
#[inline(always)]
fn position_embeddings_body(c: &VisionConfig, pos: &[f32], px: usize, py: usize) -> Vec<f32> {
    let e = c.n_embd;
    let n = c.image_size / c.patch_size;
    if (px, py) == (n, n) || c.projector != Projector::Qwen3Vl {
        return pos.to_vec();
    }
    let scale = |out: usize| {
        if out > 1 && n > 1 {
            (out - 1) as f32 / (n - 1) as f32
        } else {
            out as f32 / n as f32
        }
    };
    let (sf0, sf1) = (scale(px), scale(py));
    let at = |v: f32| {
        let i0 = v.floor() as i64;
        let a = i0.clamp(0, n as i64 - 1) as usize;
        let b = (i0 + 1).clamp(0, n as i64 - 1) as usize;
        (a, b, (v - a as f32).clamp(0.0, 1.0))
    };
    let mut out = vec![0.0f32; px * py * e];
    for oy in 0..py {
        let (y0, y1, dy) = at(oy as f32 / sf1);
        for ox in 0..px {
            let (x0, x1, dx) = at(ox as f32 / sf0);
            for ch in 0..e {
                let g = |x: usize, y: usize| pos[(y * n + x) * e + ch];
                let (a, b, cc, d) = (g(x0, y0), g(x1, y0), g(x0, y1), g(x1, y1));
                let v = (a * (1.0 - dx)).mul_add(1.0 - dy, b * dx * (1.0 - dy));
                let v = (cc * (1.0 - dx)).mul_add(dy, v);
                out[(oy * px + ox) * e + ch] = (d * dx).mul_add(dy, v);
            }
        }
    }
    out
}

crate::engine::cpu::ops::fma_dispatch!(fn position_embeddings(c: &VisionConfig, pos: &[f32], px: usize, py: usize) -> Vec<f32> => position_embeddings_body);

/// ggml's `ggml_norm` (mean and variance in f64 sums of f32 terms, 16-lane products
/// reduced first), then `* w + b`.
fn layer_norm(x: &mut [f32], dim: usize, w: &[f32], b: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(dim) {
        let sum: f64 = row.iter().map(|&v| v as f64).sum();
        let mean = sum as f32 / dim as f32;
        let mut var = 0.0f64;
        let full = dim / 16 * 16;
        for v in row.iter_mut() {
            *v -= mean;
        }
        for chunk in row[..full].chunks_exact(16) {
            let sq: [f32; 16] = std::array::from_fn(|l| chunk[l] * chunk[l]);
            var += reduce_add_16(&sq) as f64;
        }
        for &v in &row[full..] {
            var += (v * v) as f64;
        }
        let variance = (var / dim as f64) as f32;
        let scale = 1.0 / (variance + eps).sqrt();
        for ((v, &w), &b) in row.iter_mut().zip(w).zip(b) {
            *v = (*v * scale) * w + b;
        }
    }
}

/// ggml's GELU: the tanh form evaluated at the input rounded to f16, from its f16 table.
fn gelu(x: &mut [f32]) {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| {
                let f = f16::from_bits(bits).to_f32();
                let g =
                    0.5 * f * (1.0 + (0.797_884_6 * f * (0.044_715 * f).mul_add(f, 1.0)).tanh());
                f16::from_f32(g).to_f32()
            })
            .collect()
    });
    for v in x {
        *v = if *v <= -10.0 {
            0.0
        } else if *v >= 10.0 {
            *v
        } else {
            table[f16::from_f32(*v).to_bits() as usize]
        };
    }
}

/// Qwen-VL's 2-D vision RoPE (`ggml_rope_multi` in vision mode, base 10000): each head's
/// first half rotates against its second half; the first quarter of the pairs by the
/// row position, the second by the column position, each angle restarting per section.
#[inline(always)]
fn rope_vision_body(x: &mut [f32], d: usize, positions: &[[u32; 4]]) {
    let n_dims = d / 2;
    let sect = d / 4;
    let theta_scale = 10000f32.powf(-2.0 / n_dims as f32);
    let mut cache = vec![(0.0f32, 0.0f32); n_dims];
    let rows = x.len() / positions.len();
    for (row, p) in x.chunks_exact_mut(rows).zip(positions) {
        let mut theta = p.map(|v| v as f32);
        let base = theta;
        for (i, c) in cache.iter_mut().enumerate() {
            let sector = i % d;
            let comp = if sector == 0 {
                theta[0] = base[0];
                0
            } else if sector == sect {
                theta[1] = base[1];
                1
            } else if sector < sect {
                0
            } else {
                1
            };
            *c = (theta[comp].cos(), theta[comp].sin());
            theta.iter_mut().for_each(|t| *t *= theta_scale);
        }
        for head in row.chunks_exact_mut(d) {
            for (i, &(cos, sin)) in cache.iter().enumerate() {
                let (x0, x1) = (head[i], head[i + n_dims]);
                head[i] = x0.mul_add(cos, -(x1 * sin));
                head[i + n_dims] = x0.mul_add(sin, x1 * cos);
            }
        }
    }
}

crate::engine::cpu::ops::fma_dispatch!(fn rope_vision(x: &mut [f32], d: usize, positions: &[[u32; 4]]) => rope_vision_body);

/// idefics3's pixel shuffle (`build_patch_merge_permute`): each `s` x `s` block of the
/// `px` x `py` grid becomes one row, its patches concatenated row by row.
fn pixel_shuffle(x: &[f32], e: usize, px: usize, py: usize, s: usize) -> Vec<f32> {
    let (bx, by) = (px.div_ceil(s), py.div_ceil(s));
    let mut out = vec![0.0f32; bx * by * s * s * e];
    for yb in 0..by {
        for xb in 0..bx {
            let base = (yb * bx + xb) * s * s * e;
            for dy in 0..s {
                for dx in 0..s {
                    let (xp, yp) = (xb * s + dx, yb * s + dy);
                    if xp < px && yp < py {
                        let src = &x[(yp * px + xp) * e..][..e];
                        out[base + (dy * s + dx) * e..][..e].copy_from_slice(src);
                    }
                }
            }
        }
    }
    out
}
