//! What sessions and workers say to each other over the bus. These are the messages the
//! Redis bus will carry between nodes, so they are plain serde data: a session sends a
//! [`WorkerCommand`] to the worker's inbox, and the worker answers with [`WorkerEvent`]s on
//! the session's node inbox, correlated by job id.

use serde::{Deserialize, Serialize};

use super::engine_thread::JobEvent;
use crate::engine::generate::GenerateParams;

/// Envelope kinds.
pub const KIND_COMMAND: &str = "worker.command";
pub const KIND_EVENT: &str = "job.event";

/// One generation job, as placed on a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    pub job_id: String,
    pub model: String,
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    /// The stream the worker answers on (the session's node inbox).
    pub reply_to: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WorkerCommand {
    Run(JobSpec),
    /// Stop a job now; the worker still reports what it produced.
    Cancel { job_id: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WorkerEvent {
    /// The worker took the job; its events follow.
    Accepted { worker_id: String },
    /// The worker did not take the job (`busy`: its queue was full), so nothing ran.
    Rejected { busy: bool, reason: String },
    Job(JobEvent),
}
