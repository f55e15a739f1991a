//! Per-sequence key/value cache with a hard context limit.
//!
//! Values are stored rounded to f16 precision, exactly as llama.cpp's default F16 cache holds
//! them, but kept in `f32` storage so attention reads them without conversion.

use half::f16;

use crate::engine::EngineError;

/// One layer's keys and values, `len` rows of `dim_k` / `dim_v`.
pub struct LayerKv {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

pub struct KvCache {
    layers: Vec<LayerKv>,
    dim_k: usize,
    dim_v: usize,
    len: usize,
    max_len: usize,
}

impl KvCache {
    pub fn new(n_layer: usize, dim_k: usize, dim_v: usize, max_len: usize) -> Self {
        let layers = (0..n_layer).map(|_| LayerKv { k: Vec::new(), v: Vec::new() }).collect();
        Self { layers, dim_k, dim_v, len: 0, max_len }
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Fails, changing nothing, if `n` more positions would pass the context limit.
    pub fn check_room(&self, n: usize) -> Result<(), EngineError> {
        if self.len + n > self.max_len {
            return Err(EngineError::ContextFull { needed: self.len + n, limit: self.max_len });
        }
        Ok(())
    }

    /// Appends `k`/`v` rows for layer `layer` at positions `len..len + n`.
    pub fn write(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        let l = &mut self.layers[layer];
        debug_assert_eq!(k.len() / self.dim_k, v.len() / self.dim_v);
        l.k.extend(k.iter().map(|&x| f16::from_f32(x).to_f32()));
        l.v.extend(v.iter().map(|&x| f16::from_f32(x).to_f32()));
    }

    /// Marks `n` positions written in every layer.
    pub fn advance(&mut self, n: usize) {
        self.len += n;
        debug_assert!(self.layers.iter().all(|l| l.k.len() == self.len * self.dim_k));
    }

    pub fn layer(&self, layer: usize) -> &LayerKv {
        &self.layers[layer]
    }

}
