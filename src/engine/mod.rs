//! The inference engine: GGUF models in, token ids out.
//!
//! It knows no network, no HTTP and no OpenAI JSON. Workers wrap it. The layers, bottom up:
//! `gguf` (the file), `quant` (block formats and dot kernels), `cpu` (the [`Backend`] on CPU
//! threads), `cuda` (the forward pass on NVIDIA GPUs), `model` (the forward pass), `kv` (the paged KV cache), `tokenizer`, `template` (chat prompts),
//! `sampler`, `generate` (one sequence's decoding: streaming text, stop strings; and the
//! single-sequence loop), `batch` (continuous batching over the paged cache), and `vision`
//! (images through an mmproj vision tower).

pub mod backend;
pub mod batch;
pub mod constraint;
pub mod cpu;
pub mod cuda;
pub mod generate;
pub mod gguf;
pub mod kv;
pub mod model;
pub mod quant;
pub mod sampler;
pub mod template;
pub mod tokenizer;
pub mod vision;

pub use backend::Backend;
pub use cpu::CpuBackend;
pub use model::Model;

/// Everything that can go wrong inside the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    #[error("unsupported model architecture `{0}` (supported: {arch})", arch = model::config::SUPPORTED_ARCHS)]
    UnsupportedArch(String),
    #[error("invalid model: {0}")]
    BadModel(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("grammar: {0}")]
    Grammar(String),
    #[error("context length exceeded: {needed} positions needed, the limit is {limit}")]
    ContextFull { needed: usize, limit: usize },
    #[error("token id {token} is outside the vocabulary of {vocab} tokens")]
    BadToken { token: u32, vocab: usize },
    #[error("this model has no vision tower: images cannot be read")]
    NoVision,
    #[error(transparent)]
    Cuda(#[from] cuda::CudaError),
}
