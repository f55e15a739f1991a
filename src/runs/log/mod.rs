//! Where durable runs live: each run's event log, its private metadata, its executor's lease
//! and its cancel request. [`RunLog`] is the one interface; [`embedded::RedbRunLog`] (a redb
//! file beside the ledger) serves `supernet serve` and [`redis::RedisRunLog`] (a Redis
//! stream per run) the cluster, and one conformance suite runs against both.
//!
//! Appends are fenced: an event is written only as the log's next sequence and only by the
//! holder of the run's lease, so an executor that lost its lease (it stalled, another front
//! took the run over) cannot write a second history beside the new executor's.

#[cfg(test)]
mod conformance;
pub mod embedded;
pub mod redis;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::event::RunEvent;

/// What a run keeps that its owner's snapshot does not show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunMeta {
    pub run_id: String,
    pub account_id: String,
    /// The API key that created the run and the hash of its secret: the executor bills the
    /// run's jobs under it (a key disabled meanwhile places no new hold).
    pub key_id: String,
    pub secret_hash: String,
    pub idempotency_key: Option<String>,
    pub created_ms: u64,
    /// Where the run was created (`scheme://host`): its media URLs are made under it.
    #[serde(default)]
    pub origin: String,
    /// What kind of run it is ([`KIND_CHAT`] or [`KIND_WORKFLOW`]): each kind is listed
    /// apart, and its idempotency keys are its own.
    #[serde(default = "chat_kind")]
    pub kind: String,
}

/// A durable chat run (`/v1/chat/runs`).
pub const KIND_CHAT: &str = "chat";
/// A creative workflow (`/v1/creative-agent/workflows`).
pub const KIND_WORKFLOW: &str = "workflow";

fn chat_kind() -> String {
    KIND_CHAT.into()
}

impl RunMeta {
    /// The key the run's jobs are billed under: the one that created it.
    pub fn key(&self) -> crate::billing::accounts::Presented {
        crate::billing::accounts::Presented {
            record: crate::store::ApiKeyRecord {
                key_id: self.key_id.clone(),
                account_id: self.account_id.clone(),
                created: 0,
                disabled: false,
            },
            proof: crate::store::KeyProof {
                key_id: self.key_id.clone(),
                secret_hash: self.secret_hash.clone(),
            },
        }
    }

    /// The idempotency key as stored: a chat run's as sent, another kind's under its kind.
    pub fn scoped_idempotency_key(&self) -> Option<String> {
        let key = self.idempotency_key.as_deref()?;
        Some(if self.kind == KIND_CHAT {
            key.to_string()
        } else {
            format!("{}:{key}", self.kind)
        })
    }
}

/// Who executes a run, until when (contract §3's `lease`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub lease_id: String,
    pub owner_id: String,
    /// Unix milliseconds.
    pub acquired_at: u64,
    pub heartbeat_at: u64,
    pub expires_at: u64,
}

/// What [`RunLog::create`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    New,
    /// The account already made a run under this idempotency key: that one.
    Existing(String),
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("no run `{0}`")]
    NoRun(String),
    /// The append's first sequence is not the log's next one, or the writer does not hold
    /// the lease: another executor wrote meanwhile.
    #[error("run `{0}` is written by another executor")]
    Fenced(String),
    #[error("{0}")]
    Backend(String),
}

pub trait RunLog: Send + Sync {
    /// Creates a run with its first event (sequence 0), unless the account already made one
    /// of its kind under `meta.idempotency_key`. The run starts out needing an executor.
    fn create(&self, meta: &RunMeta, first: &RunEvent) -> Result<Created, LogError>;
    fn meta(&self, run_id: &str) -> Result<Option<RunMeta>, LogError>;
    /// Appends `events` (numbered from the log's next sequence, which must be
    /// `events[0].sequence`) if `owner` holds the run's lease.
    fn append(&self, run_id: &str, owner: &str, events: &[RunEvent]) -> Result<(), LogError>;
    /// The events after sequence `after` (all of them for `None`), in order.
    fn read(&self, run_id: &str, after: Option<u64>) -> Result<Vec<RunEvent>, LogError>;
    /// Waits up to `timeout` until one of the runs has events after its cursor; returns
    /// those (an empty list when none came).
    fn wait(
        &self,
        cursors: &[(String, Option<u64>)],
        timeout: Duration,
    ) -> Result<Vec<(String, Vec<RunEvent>)>, LogError>;

    /// Takes the run's lease for `owner` until `until_ms` if it is free, expired, or
    /// already `owner`'s (then this renews it); `None` when another owner holds it.
    fn claim(
        &self,
        run_id: &str,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Option<Lease>, LogError>;
    fn lease(&self, run_id: &str) -> Result<Option<Lease>, LogError>;
    /// `owner` stops executing the run: its lease ends, and the run no longer needs an
    /// executor (it waits for its user, or it is over) until [`RunLog::activate`].
    fn park(&self, run_id: &str, owner: &str) -> Result<(), LogError>;
    /// The run needs an executor again (its user answered).
    fn activate(&self, run_id: &str) -> Result<(), LogError>;
    /// An ended run goes on (a workflow resumed after it failed or was cancelled): it is no
    /// longer due for deletion, its cancel request is forgotten, and it needs an executor.
    fn reopen(&self, run_id: &str) -> Result<(), LogError>;
    /// The account's runs of `kind`, newest first: up to `limit` after the first `offset`.
    fn list(
        &self,
        account_id: &str,
        kind: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<String>, LogError>;
    /// Up to `limit` runs that need an executor and whose lease ended before `now_ms`.
    fn orphans(&self, now_ms: u64, limit: usize) -> Result<Vec<String>, LogError>;

    /// Asks the run's executor to cancel it.
    fn request_cancel(&self, run_id: &str, reason: &str) -> Result<(), LogError>;
    /// The reason of a cancel asked for, if one was.
    fn cancel_requested(&self, run_id: &str) -> Result<Option<String>, LogError>;

    /// The run ended at `at_ms`: it is deleted once the retention period after that passes.
    fn finished(&self, run_id: &str, at_ms: u64) -> Result<(), LogError>;
    /// Up to `limit` runs that ended before `before_ms`.
    fn ended_before(&self, before_ms: u64, limit: usize) -> Result<Vec<String>, LogError>;
    /// Deletes everything of the run.
    fn delete(&self, run_id: &str) -> Result<(), LogError>;

    /// `owner` ended the run at `at_ms`: it needs no executor any more, and its retention
    /// starts.
    fn retire(&self, run_id: &str, owner: &str, at_ms: u64) -> Result<(), LogError> {
        self.park(run_id, owner)?;
        self.finished(run_id, at_ms)
    }
}
