//! The key/value cache, paged: positions live in fixed-size blocks of one store, and each
//! sequence names its blocks in a block table, so sequences of any length share one pool
//! without fragmenting it, and full blocks can be shared between sequences (prefix caching,
//! [`blocks`]).
//!
//! A hybrid model's recurrent layers keep no keys or values: each sequence holds a fixed-size
//! state instead, in a slot of the same store ([`KvStore::state_mut`]).
//!
//! Values are stored rounded to f16 precision, exactly as llama.cpp's default F16 cache holds
//! them, but kept in `f32` storage so attention reads them without conversion.

pub mod blocks;

use half::f16;

use crate::engine::EngineError;

/// Positions per block.
pub const BLOCK: usize = 16;

/// Blocks needed for `positions` positions.
pub fn blocks_for(positions: usize) -> usize {
    positions.div_ceil(BLOCK)
}

/// One layer's keys and values: block `b` holds positions' rows `b * BLOCK ..` of width
/// `dim_k` / `dim_v`.
pub struct LayerStore {
    k: Vec<f32>,
    v: Vec<f32>,
}

/// What attention reads of one layer: the whole store and one sequence's block table.
#[derive(Clone, Copy)]
pub struct KvView<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub blocks: &'a [u32],
    pub dim_k: usize,
    pub dim_v: usize,
}

impl<'a> KvView<'a> {
    /// The key row (all KV heads) of position `pos`.
    #[inline(always)]
    pub fn k_row(&self, pos: usize) -> &'a [f32] {
        let at = self.blocks[pos / BLOCK] as usize * BLOCK + pos % BLOCK;
        &self.k[at * self.dim_k..][..self.dim_k]
    }

    #[inline(always)]
    pub fn v_row(&self, pos: usize) -> &'a [f32] {
        let at = self.blocks[pos / BLOCK] as usize * BLOCK + pos % BLOCK;
        &self.v[at * self.dim_v..][..self.dim_v]
    }

    /// `range` cut at block edges: for each run, the keys and values from its first
    /// position to the end of its block (whole rows, all KV heads).
    pub fn runs(
        &self,
        range: std::ops::Range<usize>,
    ) -> impl Iterator<Item = (&'a [f32], &'a [f32])> + '_ {
        let mut pos = range.start;
        std::iter::from_fn(move || {
            if pos >= range.end {
                return None;
            }
            let n = (BLOCK - pos % BLOCK).min(range.end - pos);
            let at = self.blocks[pos / BLOCK] as usize * BLOCK + pos % BLOCK;
            let run = (
                &self.k[at * self.dim_k..(at + n) * self.dim_k],
                &self.v[at * self.dim_v..(at + n) * self.dim_v],
            );
            pos += n;
            Some(run)
        })
    }
}

/// Every layer's blocks. Storage grows as higher block ids are first used, up to what the
/// block allocator hands out.
pub struct KvStore {
    layers: Vec<LayerStore>,
    dim_k: usize,
    dim_v: usize,
    blocks: usize,
    /// Recurrent state: slot `s` is `state_len` floats from `s * state_len`.
    states: Vec<f32>,
    state_len: usize,
}

impl KvStore {
    pub fn new(n_layer: usize, dim_k: usize, dim_v: usize) -> Self {
        Self {
            layers: (0..n_layer)
                .map(|_| LayerStore {
                    k: Vec::new(),
                    v: Vec::new(),
                })
                .collect(),
            dim_k,
            dim_v,
            blocks: 0,
            states: Vec::new(),
            state_len: 0,
        }
    }

    /// The same store with a recurrent state of `state_len` floats per sequence slot.
    pub fn with_recurrent(mut self, state_len: usize) -> Self {
        self.state_len = state_len;
        self
    }

    /// The recurrent state of slot `slot` (empty for models without one), made on first use.
    pub fn state_mut(&mut self, slot: usize) -> &mut [f32] {
        let (at, len) = (slot * self.state_len, self.state_len);
        if self.states.len() < at + len {
            self.states.resize(at + len, 0.0);
        }
        &mut self.states[at..at + len]
    }

    /// Makes blocks `0..n` usable.
    pub fn grow_to(&mut self, n: usize) {
        if n <= self.blocks {
            return;
        }
        for l in &mut self.layers {
            l.k.resize(n * BLOCK * self.dim_k, 0.0);
            l.v.resize(n * BLOCK * self.dim_v, 0.0);
        }
        self.blocks = n;
    }

    /// Writes `k`/`v` rows (rounded to f16) of layer `layer` at positions `start..` of the
    /// sequence whose block table is `blocks`.
    pub fn write(&mut self, layer: usize, blocks: &[u32], start: usize, k: &[f32], v: &[f32]) {
        let (dk, dv) = (self.dim_k, self.dim_v);
        let l = &mut self.layers[layer];
        for (i, (kr, vr)) in k.chunks_exact(dk).zip(v.chunks_exact(dv)).enumerate() {
            let pos = start + i;
            let at = blocks[pos / BLOCK] as usize * BLOCK + pos % BLOCK;
            l.k[at * dk..][..dk]
                .iter_mut()
                .zip(kr)
                .for_each(|(d, &x)| *d = f16::from_f32(x).to_f32());
            l.v[at * dv..][..dv]
                .iter_mut()
                .zip(vr)
                .for_each(|(d, &x)| *d = f16::from_f32(x).to_f32());
        }
    }

    /// Copies block `from` into block `to` in every layer (copy-on-write of a shared block).
    pub fn copy_block(&mut self, from: u32, to: u32) {
        let (f, t) = (from as usize * BLOCK, to as usize * BLOCK);
        for l in &mut self.layers {
            l.k.copy_within(f * self.dim_k..(f + BLOCK) * self.dim_k, t * self.dim_k);
            l.v.copy_within(f * self.dim_v..(f + BLOCK) * self.dim_v, t * self.dim_v);
        }
    }

    pub fn view<'a>(&'a self, layer: usize, blocks: &'a [u32]) -> KvView<'a> {
        let l = &self.layers[layer];
        KvView {
            k: &l.k,
            v: &l.v,
            blocks,
            dim_k: self.dim_k,
            dim_v: self.dim_v,
        }
    }
}

/// The cache of one sequence alone (`supernet generate`, `bench`, the reference tests):
/// a store of its own whose blocks are taken in order, with a hard context limit.
pub struct KvCache {
    store: KvStore,
    blocks: Vec<u32>,
    len: usize,
    max_len: usize,
}

impl KvCache {
    /// A cache over `store` (whose recurrent slot 0, if any, is this sequence's).
    pub fn new(store: KvStore, max_len: usize) -> Self {
        Self {
            store,
            blocks: Vec::new(),
            len: 0,
            max_len,
        }
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Makes room for `n` more positions; fails, changing nothing, past the context limit.
    pub fn reserve(&mut self, n: usize) -> Result<(), EngineError> {
        if self.len + n > self.max_len {
            return Err(EngineError::ContextFull {
                needed: self.len + n,
                limit: self.max_len,
            });
        }
        let need = blocks_for(self.len + n);
        self.blocks.extend(self.blocks.len() as u32..need as u32);
        self.store.grow_to(need);
        Ok(())
    }

    /// The store to write and the block table to write through.
    pub fn parts(&mut self) -> (&mut KvStore, &[u32]) {
        (&mut self.store, &self.blocks)
    }

    /// Marks `n` more positions written.
    pub fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
