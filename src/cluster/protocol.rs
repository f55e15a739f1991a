//! The messages of cluster mode that `supernet serve` never sends: placement requests to
//! the coordinator, worker heartbeats, and the pool view and model cards fronts read.

use serde::{Deserialize, Serialize};

use crate::worker::actor::{WorkerInfo, WorkerLoad};
use crate::worker::protocol::JobSpec;

pub const KIND_COORDINATOR: &str = "coordinator.command";
pub const KIND_HEARTBEAT: &str = "worker.heartbeat";

/// Prompt tokens hashed for prefix affinity: jobs that share them go to the same worker
/// when its load allows, where its caches are warm.
const PREFIX_TOKENS: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaceRequest {
    pub job: JobSpec,
    /// The model tier's queue priority; higher is placed first.
    pub priority: u8,
    /// Hash of the prompt's first tokens.
    pub prefix: u64,
    /// Workers not to use (they lost an earlier attempt of the job).
    pub exclude: Vec<String>,
}

impl PlaceRequest {
    pub fn prefix_of(prompt: &[u32]) -> u64 {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for t in prompt.iter().take(PREFIX_TOKENS) {
            h.update(t.to_le_bytes());
        }
        let d = h.finalize();
        u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CoordinatorCommand {
    Place(Box<PlaceRequest>),
    /// The session gave up on a job that waits: drop it from the queue.
    Withdraw {
        job_id: String,
    },
}

/// A worker's registration and load, sent every heartbeat interval and whenever a job ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub info: WorkerInfo,
    pub load: WorkerLoad,
    /// Jobs that reached the worker since its last heartbeat, held or already ended: the
    /// coordinator stops counting its own record of placing them (a short job can start and
    /// end between two heartbeats, and `load` never shows it).
    pub received: Vec<String>,
    /// The worker has drained and is going away: forget it now.
    pub leaving: bool,
    /// Unix milliseconds when sent; a coordinator reading old entries skips stale ones.
    pub sent_at_ms: u64,
}

/// Unix milliseconds now.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The live pool as the leader sees it, published for fronts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PoolView {
    pub workers: Vec<(WorkerInfo, WorkerLoad)>,
}

/// What a front needs to serve a model it has no weights for: the GGUF file's metadata
/// (tokenizer, chat template, architecture), as a GGUF file without tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCard {
    pub model_id: String,
    pub architecture: String,
    pub context_length: usize,
    pub gguf_metadata: Vec<u8>,
}
