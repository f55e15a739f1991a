//! Everything that crosses between nodes: the messages ([`job`], [`pool`]), the streams
//! they travel on and who reads them ([`streams`]), how many entries each keeps, the
//! helpers that send them, and the blobs a job's images travel in ([`images`]). The bus ([`crate::bus`]) moves opaque envelopes; this module
//! says what is in them.
//!
//! The messages are types of their own, converted from and to the engine's at the edge,
//! so a change inside the engine cannot change the wire. A change to any message is a
//! change of [`VERSION`]: the golden test (`golden.rs`, bytes in `tests/data/wire/`) fails
//! until the checked-in bytes are regenerated, and regenerating them means bumping the
//! version, which renames every stream, so nodes of two versions never read each other.

#[cfg(test)]
mod golden;
pub mod images;
pub mod job;
pub mod media;
pub mod pool;

pub use job::{
    Finish, ImageRunSpec, JobImage, JobParams, JobRef, JobSpec, Logprob, NodeMessage, Placement,
    Progress, QueueReason, Sampling, WorkerCommand, WorkerEvent,
};
pub use pool::{
    prefix_of, BatchFigures, CoordinatorCommand, Heartbeat, ModelCard, PlaceRequest, PoolView,
    WorkerInfo, WorkerKind, WorkerLoad,
};

use crate::bus::{post, send, Bus, BusError, BusFuture, Outbox};

/// The protocol this build speaks: the envelope version and the `v` in every stream and
/// key name.
pub use crate::bus::PROTOCOL_VERSION as VERSION;

/// Envelope kinds.
pub const KIND_COMMAND: &str = "worker.command";
pub const KIND_NODE: &str = "node.message";
pub const KIND_COORDINATOR: &str = "coordinator.command";
pub const KIND_HEARTBEAT: &str = "worker.heartbeat";

/// Stream names, their consumer groups and their lengths. Names carry the protocol
/// version.
pub mod streams {
    use super::VERSION;

    /// Entries kept on a worker inbox, a node inbox or the coordinator's stream: far more
    /// than a consumer that keeps up ever leaves.
    pub const JOB_STREAM_LEN: usize = 100_000;
    /// Entries kept on the heartbeat stream.
    pub const HEARTBEAT_STREAM_LEN: usize = 10_000;

    /// The group of a worker's inbox.
    pub const WORKER_GROUP: &str = "workers";
    /// The group of a node's inboxes.
    pub const SESSION_GROUP: &str = "sessions";
    /// The group of the placement stream (only the leader reads it).
    pub const COORDINATOR_GROUP: &str = "coordinator";

    /// One worker's inbox: jobs to run and cancellations.
    pub fn worker(worker_id: &str) -> String {
        format!("sn:v{VERSION}:worker:{worker_id}")
    }

    /// One front node's inbox: the job events of its sessions.
    pub fn node(node_id: &str) -> String {
        format!("sn:v{VERSION}:node:{node_id}")
    }

    /// Placement requests, read by the leader coordinator.
    pub fn coordinator() -> String {
        format!("sn:v{VERSION}:coordinator")
    }

    /// Worker registrations, loads and departures, read by every coordinator (each with a
    /// group of its own).
    pub fn heartbeats() -> String {
        format!("sn:v{VERSION}:heartbeats")
    }

    /// The Redis key of a cluster value beside the streams (`leader`, `pool`, `card:{model}`).
    pub fn key(name: &str) -> String {
        format!("sn:v{VERSION}:{name}")
    }
}

/// Puts a command on a worker's inbox.
pub async fn to_worker(
    bus: &dyn Bus,
    sender: &str,
    worker_id: &str,
    job_id: &str,
    command: &WorkerCommand,
) -> Result<(), BusError> {
    send(
        bus,
        &streams::worker(worker_id),
        streams::JOB_STREAM_LEN,
        KIND_COMMAND,
        sender,
        job_id,
        command,
    )
    .await
}

/// Queues `message` for the session of `job_id` on its node's inbox `stream`, behind what
/// the caller queued there before.
pub fn post_to_node<'a>(
    bus: &'a dyn Bus,
    sender: &str,
    stream: &'a str,
    job_id: &str,
    message: &NodeMessage,
) -> BusFuture<'a, ()> {
    post(
        bus,
        stream,
        streams::JOB_STREAM_LEN,
        KIND_NODE,
        sender,
        job_id,
        message,
    )
}

/// Tells the session of `job_id` something; a failure is logged (the session's own
/// timeouts cover a message that never arrives).
pub async fn tell_node(
    bus: &dyn Bus,
    sender: &str,
    stream: &str,
    job_id: &str,
    message: NodeMessage,
) {
    let sent = post_to_node(bus, sender, stream, job_id, &message).await;
    log_undelivered(job_id, stream, sent);
}

/// Logs a message to a session that could not be sent.
pub fn log_undelivered(job_id: &str, stream: &str, sent: Result<(), BusError>) {
    if let Err(e) = sent {
        tracing::error!(job = %job_id, %stream, "telling a session: {e}");
    }
}

/// Sends a command to the leader coordinator.
pub async fn to_coordinator(
    bus: &dyn Bus,
    sender: &str,
    job_id: &str,
    command: &CoordinatorCommand,
) -> Result<(), BusError> {
    send(
        bus,
        &streams::coordinator(),
        streams::JOB_STREAM_LEN,
        KIND_COORDINATOR,
        sender,
        job_id,
        command,
    )
    .await
}

/// A command to the coordinator as an entry for a store change to append with itself (see
/// [`Outbox`]).
pub fn coordinator_outbox(
    sender: &str,
    job_id: &str,
    command: &CoordinatorCommand,
) -> Result<Outbox, BusError> {
    Outbox::new(
        streams::coordinator(),
        streams::JOB_STREAM_LEN,
        KIND_COORDINATOR,
        sender,
        job_id,
        command,
    )
}

/// Publishes a worker's heartbeat.
pub async fn heartbeat(bus: &dyn Bus, beat: &Heartbeat) -> Result<(), BusError> {
    let id = &beat.info.worker_id;
    send(
        bus,
        &streams::heartbeats(),
        streams::HEARTBEAT_STREAM_LEN,
        KIND_HEARTBEAT,
        id,
        id,
        beat,
    )
    .await
}
