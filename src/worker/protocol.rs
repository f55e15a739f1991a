//! What sessions, workers and the coordinator say to each other over the bus. These are
//! the messages that cross nodes, so they are plain serde data: a [`WorkerCommand`] goes to
//! a worker's inbox, and a front's inbox receives [`NodeMessage`]s about its sessions' jobs,
//! correlated by job id and attempt.

use serde::{Deserialize, Serialize};

use super::engine_thread::JobEvent;
use crate::engine::generate::{GenerateParams, Resume};

/// Envelope kinds.
pub const KIND_COMMAND: &str = "worker.command";
pub const KIND_NODE: &str = "node.message";

/// One generation job, as placed on a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    pub job_id: String,
    /// Counts placements of this job: a job moved off a dead worker runs as the next attempt,
    /// and events of an earlier attempt are ignored.
    pub attempt: u32,
    pub account_id: String,
    pub model: String,
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    /// Where an earlier attempt left off (empty for a first attempt).
    pub resume: Resume,
    /// The stream the worker answers on (the session's node inbox).
    pub reply_to: String,
}

impl JobSpec {
    /// What a worker reports about the job in its heartbeats.
    pub fn job_ref(&self) -> JobRef {
        JobRef {
            job_id: self.job_id.clone(),
            attempt: self.attempt,
            account_id: self.account_id.clone(),
            reply_to: self.reply_to.clone(),
        }
    }
}

/// A job a worker holds, as its heartbeats list it: enough for a coordinator that takes
/// over to know whom to tell if the worker dies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    pub job_id: String,
    pub attempt: u32,
    pub account_id: String,
    pub reply_to: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WorkerCommand {
    Run(Box<JobSpec>),
    /// Stop a job now; the worker still reports what it produced.
    Cancel {
        job_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WorkerEvent {
    /// The worker took the job; its events follow.
    Accepted {
        worker_id: String,
    },
    /// The worker did not take the job (`busy`: its queue was full), so nothing ran.
    Rejected {
        busy: bool,
        reason: String,
    },
    Job(JobEvent),
}

/// Why a job waits for a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueReason {
    /// No live worker serves the model (one may be joining, or the job's worker died).
    NoWorkers,
    /// The account has as many jobs running as it may.
    ConcurrencyLimit,
    /// Every worker of the model is full.
    Queued,
}

impl QueueReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoWorkers => "no_workers",
            Self::ConcurrencyLimit => "concurrency_limit",
            Self::Queued => "queued",
        }
    }
}

/// The coordinator's answer to a placement request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Placement {
    /// The job is on this worker's inbox.
    Placed { worker_id: String },
    /// The job waits; it is placed when a worker has room.
    Waiting(QueueReason),
    /// The job cannot be placed (`busy`: the pool is full; otherwise no worker serves it).
    Refused { busy: bool, reason: String },
}

/// What a front's inbox receives about one attempt of one of its sessions' jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NodeMessage {
    /// From the worker running the attempt.
    Worker { attempt: u32, event: WorkerEvent },
    /// From the coordinator.
    Placement { attempt: u32, placement: Placement },
    /// The coordinator declared the attempt's worker dead: the job must move.
    Lost { attempt: u32, worker_id: String },
}
