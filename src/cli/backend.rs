//! `--backend cpu|cuda` for the commands that run a model locally.
//!
//! The CPU is the default. The GPU path has not yet passed its acceptance run on a GPU
//! (docs/gpu-notes.md), so nothing picks it by itself: it runs only when asked for, and
//! fails with the reason when it cannot (no driver, no device, a model it does not run).

use crate::engine::cuda::{CudaModel, CudaOptions, Gpu};
use crate::engine::Model;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// SIMD kernels on the CPU threads.
    #[default]
    Cpu,
    /// Our CUDA kernels on GPU 0 (needs a CUDA driver and NVRTC; see SUPERNET_CUDA_LIB_DIRS).
    Cuda,
}

/// The model on the GPU, or `None` to run on the CPU.
pub fn open_gpu(
    choice: BackendChoice,
    model: &Model,
    opts: CudaOptions,
) -> anyhow::Result<Option<CudaModel>> {
    match choice {
        BackendChoice::Cpu => Ok(None),
        BackendChoice::Cuda => {
            let m = CudaModel::load(Gpu::open(0)?, model, opts)?;
            tracing::info!("running on {}", m.describe());
            Ok(Some(m))
        }
    }
}
