//! The CPU backend: SIMD kernels chosen at run time and a dedicated thread pool.

mod attention;
mod delta;
mod matmul;
pub(crate) mod ops;
pub use ops::fma_available;
pub mod pool;

use crate::engine::backend::{Arithmetic, Backend, DeltaRule, MatmulJob, SeqAttention};
use crate::engine::model::config::{RopeConfig, RopePos};
use crate::engine::model::weights::Weight;
use crate::engine::quant::{kernels, Kernels};
use pool::ThreadPool;

/// An output pointer that threads of one parallel region write disjoint elements through.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: users guarantee each element is written by one thread only, and that the buffer
// outlives the parallel region.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Through a method, so closures capture the whole (Sync) wrapper, not the raw field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

pub struct CpuBackend {
    pool: ThreadPool,
    kernels: &'static Kernels,
}

impl CpuBackend {
    /// A backend running on `threads` OS threads (the calling thread included).
    pub fn new(threads: usize) -> Self {
        Self {
            pool: ThreadPool::new(threads),
            kernels: kernels(),
        }
    }

    pub fn threads(&self) -> usize {
        self.pool.n_threads()
    }
}

/// Threads to use when the user does not say: the physical parallelism we can see.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Backend for CpuBackend {
    fn describe(&self) -> String {
        format!(
            "cpu ({} kernels, {} threads)",
            self.kernels.level.name(),
            self.pool.n_threads()
        )
    }

    fn prepare(&self, weights: &[&Weight]) {
        self.pool.for_chunks(weights.len(), 1, &|range| {
            for w in &weights[range] {
                if self.kernels.interleaved(w.ty).is_some() {
                    w.interleaved();
                }
            }
        });
    }

    fn matmul(&self, x: &[f32], n_tokens: usize, jobs: &mut [MatmulJob<'_>], arith: Arithmetic) {
        matmul::matmul(&self.pool, self.kernels, x, n_tokens, jobs, arith);
    }

    fn rms_norm(&self, x: &mut [f32], dim: usize, weight: &[f32], eps: f32) {
        for row in x.chunks_exact_mut(dim) {
            ops::rms_norm(row, weight, eps);
        }
    }

    fn rope(
        &self,
        x: &mut [f32],
        head_dim: usize,
        positions: &[RopePos],
        rope: &RopeConfig,
        freq_factors: Option<&[f32]>,
    ) {
        let row = x.len() / positions.len();
        for (r, &pos) in x.chunks_exact_mut(row).zip(positions) {
            ops::rope(r, head_dim, pos, rope, freq_factors);
        }
    }

    fn attention(&self, q: &[f32], seqs: &[SeqAttention<'_>], arith: Arithmetic, out: &mut [f32]) {
        attention::attention(&self.pool, q, seqs, arith, out);
    }

    fn swiglu(&self, gate: &mut [f32], up: &[f32]) {
        ops::swiglu(gate, up);
    }

    fn silu(&self, x: &mut [f32], row: usize) {
        for r in x.chunks_exact_mut(row) {
            ops::silu(r);
        }
    }

    fn sigmoid(&self, x: &mut [f32]) {
        x.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp()));
    }

    fn l2_norm(&self, x: &mut [f32], dim: usize, eps: f32) {
        for row in x.chunks_exact_mut(dim) {
            ops::l2_norm(row, eps);
        }
    }

    fn ssm_conv(
        &self,
        x: &[f32],
        channels: usize,
        taps: &[f32],
        state: &mut [f32],
        out: &mut [f32],
    ) {
        delta::ssm_conv(x, channels, taps, state, out);
    }

    fn delta_rule(&self, job: DeltaRule<'_>) {
        delta::delta_rule(&self.pool, job);
    }
}
