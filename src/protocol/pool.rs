//! The messages about the pool: workers' heartbeats, placement requests to the
//! coordinator, the pool view the leader publishes for fronts, and the model cards workers
//! publish.

use serde::{Deserialize, Serialize};

use super::job::{JobRef, JobSpec};
use crate::engine::batch::BatchStats;

/// What kind of work a worker does; the coordinator places a job only on its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WorkerKind {
    /// Text generation with a GGUF model.
    Llm,
    /// Image, video and music jobs, each of a pipeline the worker lists.
    Media,
}

impl WorkerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llm => "llm",
            Self::Media => "media",
        }
    }
}

/// What a worker serves, as it registers with the coordinator: its capabilities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub worker_id: String,
    pub kind: WorkerKind,
    /// The model it serves.
    pub model_id: String,
    pub context_length: u64,
    /// Sequences decoded together.
    pub max_batch: u64,
    /// KV-cache positions it has.
    pub kv_capacity: u64,
    /// A simulator (`supernet worker --simulate`): no model behind it, placeholder tokens.
    /// Coordinators place nothing on it unless simulation is allowed.
    pub simulated: bool,
    /// The media pipelines it runs (a media worker's; empty for an LLM worker).
    pub pipelines: Vec<String>,
}

impl WorkerInfo {
    /// Whether it runs jobs of `kind` for `model` (an LLM's id, or a media pipeline).
    pub fn serves(&self, kind: WorkerKind, model: &str) -> bool {
        self.kind == kind
            && match kind {
                WorkerKind::Llm => self.model_id == model,
                WorkerKind::Media => self.pipelines.iter().any(|p| p == model),
            }
    }
}

/// A worker's load: what the coordinator places by.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerLoad {
    pub queued: u64,
    pub running: u64,
    pub completed: u64,
    pub cancelled: u64,
    /// The most jobs it holds at once (running and queued).
    pub capacity: u64,
    /// Taking no new jobs (an operator drained it, or it is shutting down); the ones it has
    /// still finish.
    pub draining: bool,
    /// KV-cache positions in use.
    pub kv_used: u64,
    /// Measured decode speed, summed over the running sequences.
    pub tokens_per_s: f32,
    /// The batch scheduler's figures: KV blocks, prefix cache, batch sizes.
    pub batch: BatchFigures,
    /// The jobs it holds.
    pub jobs: Vec<JobRef>,
}

impl WorkerLoad {
    /// Jobs in the worker now.
    pub fn busy(&self) -> u64 {
        self.queued + self.running
    }
}

/// The engine's [`BatchStats`] on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchFigures {
    pub running: u64,
    pub waiting: u64,
    pub kv_blocks_used: u64,
    pub kv_blocks_total: u64,
    pub prefix_query_tokens: u64,
    pub prefix_hit_tokens: u64,
    pub preemptions: u64,
    pub steps: u64,
    /// Steps by batch size, bucketed as [`crate::engine::batch::BATCH_BUCKETS`], the last
    /// slot counting the rest.
    pub batch_sizes: Vec<u64>,
    pub batch_sum: u64,
    pub tokens_generated: u64,
    pub images_encoded: u64,
    pub images_cached: u64,
}

impl From<&BatchStats> for BatchFigures {
    fn from(b: &BatchStats) -> Self {
        Self {
            running: b.running as u64,
            waiting: b.waiting as u64,
            kv_blocks_used: b.kv_blocks_used as u64,
            kv_blocks_total: b.kv_blocks_total as u64,
            prefix_query_tokens: b.prefix_query_tokens,
            prefix_hit_tokens: b.prefix_hit_tokens,
            preemptions: b.preemptions,
            steps: b.steps,
            batch_sizes: b.batch_sizes.to_vec(),
            batch_sum: b.batch_sum,
            tokens_generated: b.tokens_generated,
            images_encoded: b.images_encoded,
            images_cached: b.images_cached,
        }
    }
}

/// A worker's registration and load, sent every heartbeat interval and soon after a job
/// ends or its drain state changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// Prompt tokens hashed for prefix affinity: jobs that share them go to the same worker
/// when its load allows, where its caches are warm.
const PREFIX_TOKENS: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaceRequest {
    pub job: JobSpec,
    /// The kind of worker the job needs.
    pub kind: WorkerKind,
    /// The model tier's queue priority; higher is placed first.
    pub priority: u8,
    /// Hash of the prompt's first tokens.
    pub prefix: u64,
    /// Workers not to use (they lost an earlier attempt of the job).
    pub exclude: Vec<String>,
}

impl PlaceRequest {
    /// A request for an LLM job.
    pub fn llm(job: JobSpec, priority: u8, exclude: Vec<String>) -> Self {
        Self {
            prefix: prefix_of(&job.prompt),
            job,
            kind: WorkerKind::Llm,
            priority,
            exclude,
        }
    }

    /// A request for `job` on a worker of its kind (media when it carries a media task).
    pub fn for_job(job: JobSpec, priority: u8, exclude: Vec<String>) -> Self {
        let kind = if job.media.is_some() {
            WorkerKind::Media
        } else {
            WorkerKind::Llm
        };
        Self {
            kind,
            ..Self::llm(job, priority, exclude)
        }
    }
}

/// The affinity hash of a prompt.
pub fn prefix_of(prompt: &[u32]) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for t in prompt.iter().take(PREFIX_TOKENS) {
        h.update(t.to_le_bytes());
    }
    let d = h.finalize();
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CoordinatorCommand {
    Place(Box<PlaceRequest>),
    /// The session gave up on a job that waits: drop it from the queue.
    Withdraw {
        job_id: String,
    },
}

/// The live pool as the leader sees it, published for fronts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolView {
    pub workers: Vec<(WorkerInfo, WorkerLoad)>,
}

/// What a front needs to serve a model it has no weights for: the GGUF file's metadata
/// (tokenizer, chat template, architecture), as a GGUF file without tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub model_id: String,
    pub architecture: String,
    pub context_length: u64,
    pub gguf_metadata: Vec<u8>,
    /// The vision tower's metadata (its mmproj file without tensors), when it has one.
    pub mmproj_metadata: Option<Vec<u8>>,
}
