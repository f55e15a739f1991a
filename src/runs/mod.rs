//! Durable chat runs (`/v1/chat/runs`, contract §3): a chat turn with its hosted tool rounds
//! that outlives any one HTTP connection and any one front. A run is its event log
//! ([`log`]); its snapshot is a fold over that log ([`state`]). A front executes a run while
//! it holds the run's lease ([`executor`], writing through a [`journal`]); [`upkeep`] renews
//! this front's leases, relays cancel requests, adopts runs whose executor died, and deletes
//! ended runs after the retention period; [`follow`] wakes the SSE followers of runs.

pub mod event;
pub mod executor;
pub mod follow;
pub mod journal;
pub mod log;
pub mod request;
pub mod state;
pub mod upkeep;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::config::RunsConfig;
use log::{LogError, RunLog};

/// What an executor is told while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    Run,
    /// Its user cancelled the run (the reason).
    Cancel(String),
    /// Its lease is gone: another front executes the run now.
    Lost,
}

/// Why an executor stopped taking steps.
pub enum Stop {
    /// The run waits for its user (its lease is given up).
    Parked,
    Cancelled(String),
    Failed(String),
    /// Another front holds the lease now.
    Lost,
}

impl From<LogError> for Stop {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Fenced(_) => Stop::Lost,
            e => Stop::Failed(format!("the run's log failed: {e}")),
        }
    }
}

impl Stop {
    /// Where `signal` tells the executor to stop, why.
    pub fn check(signal: &watch::Receiver<Signal>) -> Result<(), Stop> {
        match &*signal.borrow() {
            Signal::Run => Ok(()),
            Signal::Cancel(r) => Err(Stop::Cancelled(r.clone())),
            Signal::Lost => Err(Stop::Lost),
        }
    }
}

/// This front's part in durable runs.
pub struct Runs {
    pub log: Arc<dyn RunLog>,
    /// This process's lease owner id (unique per start, so a restarted front does not take
    /// its predecessor's leases for its own).
    pub owner: String,
    pub config: RunsConfig,
    /// The runs this front executes, and how to signal each.
    executing: Mutex<HashMap<String, watch::Sender<Signal>>>,
    pub followers: follow::Followers,
}

impl Runs {
    pub fn new(
        log: Arc<dyn RunLog>,
        node_id: &str,
        config: RunsConfig,
    ) -> anyhow::Result<Arc<Self>> {
        let owner = format!("{node_id}-{}", crate::ids::random_hex(4)?);
        let followers = follow::Followers::start(Arc::clone(&log));
        Ok(Arc::new(Self {
            log,
            owner,
            config,
            executing: Mutex::new(HashMap::new()),
            followers,
        }))
    }

    /// The end of a lease taken or renewed now.
    pub fn lease_until(&self, now_ms: u64) -> u64 {
        now_ms + self.config.lease_secs * 1000
    }

    /// Registers an executor of `run_id`; `None` when this front already executes it.
    pub(crate) fn register(&self, run_id: &str) -> Option<watch::Receiver<Signal>> {
        let mut e = crate::locks::lock(&self.executing);
        if e.contains_key(run_id) {
            return None;
        }
        let (tx, rx) = watch::channel(Signal::Run);
        e.insert(run_id.to_string(), tx);
        Some(rx)
    }

    pub(crate) fn unregister(&self, run_id: &str) {
        crate::locks::lock(&self.executing).remove(run_id);
    }

    /// Signals this front's executor of `run_id`; false when it has none.
    pub fn signal(&self, run_id: &str, s: Signal) -> bool {
        crate::locks::lock(&self.executing)
            .get(run_id)
            .is_some_and(|tx| tx.send(s).is_ok())
    }

    /// The reason of a cancel asked for `run_id`, if one was (a log that cannot be read
    /// asks for none).
    pub async fn cancel_requested(&self, run_id: &str) -> Option<String> {
        let (log, id) = (Arc::clone(&self.log), run_id.to_string());
        blocking(move || log.cancel_requested(&id))
            .await
            .ok()
            .flatten()
    }

    /// The runs this front executes.
    pub fn executing(&self) -> Vec<String> {
        crate::locks::lock(&self.executing)
            .keys()
            .cloned()
            .collect()
    }
}

/// Runs a log operation off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LogError::Backend(format!("a run log call failed: {e}")))?
}
