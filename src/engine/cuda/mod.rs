//! The GPU decode path: our own CUDA kernels (`kernels/`, compiled by NVRTC at start for
//! the device, PTX cached on disk), run through cudarc with the driver loaded dynamically,
//! so the binary builds and runs on machines without CUDA.
//!
//! The CPU [`crate::engine::Backend`] hands host slices from one operation to the next;
//! on a GPU every such hop would cross PCIe. So the GPU path sits one level up, beside
//! [`crate::engine::Model`]: [`CudaModel`] keeps weights (in their GGUF block layout), the
//! paged KV cache and every activation on the device, runs a whole forward pass per call,
//! and returns only what the caller samples from: a token id (greedy), the top-k candidates,
//! or a logits row. A decode step of up to 128 sequences is captured once per batch-size
//! bucket as a CUDA graph and replayed.
//!
//! `gpu` is the device (context, stream, kernels, buffers), `compile` the NVRTC build,
//! `ops` one typed wrapper per kernel, `model` the forward pass.

pub mod compile;
pub mod gpu;
pub mod model;
pub mod ops;

pub use gpu::{probe, Gpu};
pub use model::{CudaModel, CudaOptions, Pick, Picked};

#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("CUDA is not available: {0}")]
    Unavailable(String),
    #[error("CUDA driver: {0}")]
    Driver(String),
    #[error("kernel compilation failed:\n{0}")]
    Compile(String),
    #[error("not supported on the GPU path: {0}")]
    Unsupported(String),
}
