//! The cheap element-wise operations, written to reproduce ggml's arithmetic order.

use crate::engine::model::config::RopeConfig;

/// `x = x / rms(x) * w`, with the sum of squares in f64 as ggml does.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for (v, &w) in x.iter_mut().zip(w) {
        *v = (*v * scale) * w;
    }
}

/// Rotates each head of one token row. Angles advance by repeated multiplication with
/// `base^(-2/n_dims)`, as ggml's rope cache does, so they match it bit for bit.
pub fn rope(row: &mut [f32], head_dim: usize, pos: usize, rope: &RopeConfig, freq_factors: Option<&[f32]>) {
    let n = rope.n_dims;
    let theta_scale = rope.base.powf(-2.0 / n as f32);
    let mut cs = [(0.0f32, 0.0f32); 256];
    let mut theta = pos as f32;
    for (i, c) in cs.iter_mut().take(n / 2).enumerate() {
        let ff = freq_factors.map_or(1.0, |f| f[i]);
        let t = rope.freq_scale * (theta / ff);
        *c = (t.cos(), t.sin());
        theta *= theta_scale;
    }
    for head in row.chunks_exact_mut(head_dim) {
        for (i, &(cos, sin)) in cs.iter().take(n / 2).enumerate() {
            let (a, b) = if rope.neox { (i, i + n / 2) } else { (2 * i, 2 * i + 1) };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * cos - x1 * sin;
            head[b] = x0 * sin + x1 * cos;
        }
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}
