//! One account's store calls, run one at a time, in order, by a single blocking task that
//! lives while calls wait.
//!
//! Calls on one account race for the same balance record, so run side by side they make
//! the store's optimistic commits retry against each other. Run one at a time, each through
//! its own trip to the blocking pool, a hot account instead pays a thread handoff per call.
//! Here the first call starts a drain task on the blocking pool, later calls join its queue,
//! and the task runs them back to back until the queue is empty: under load, many calls per
//! handoff.
//!
//! Calls a request waits on before its first token (holds) go ahead of the others
//! (settlements, whose requests have all their tokens), so a hot account's holds wait for
//! at most the call in progress rather than for every settlement queued before them.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::accounts::BillingError;
use super::pricing::TokenRates;
use crate::store::Store;

type Call = Box<dyn FnOnce(&dyn Store, &TokenRates) + Send>;

pub struct StoreQueue {
    store: Arc<dyn Store>,
    rates: TokenRates,
    pending: Mutex<Pending>,
}

/// Whether a call holds up a request's first token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    First,
    Later,
}

/// Calls waiting, urgent ones first, and whether a drain task is running.
#[derive(Default)]
struct Pending {
    first: VecDeque<Call>,
    later: VecDeque<Call>,
    draining: bool,
}

impl StoreQueue {
    pub fn new(store: Arc<dyn Store>, rates: TokenRates) -> Arc<Self> {
        Arc::new(Self {
            store,
            rates,
            pending: Mutex::new(Pending::default()),
        })
    }

    /// Queues `f` and resolves to its result.
    pub fn run<T: Send + 'static>(
        self: &Arc<Self>,
        urgency: Urgency,
        f: impl FnOnce(&dyn Store, &TokenRates) -> Result<T, BillingError> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, BillingError>> {
        let (tx, rx) = oneshot::channel();
        let call: Call = Box::new(move |store, rates| {
            let _ = tx.send(f(store, rates));
        });
        let start = {
            let mut p = crate::locks::lock(&self.pending);
            match urgency {
                Urgency::First => p.first.push_back(call),
                Urgency::Later => p.later.push_back(call),
            }
            !std::mem::replace(&mut p.draining, true)
        };
        if start {
            let me = Arc::clone(self);
            tokio::task::spawn_blocking(move || me.drain());
        }
        async move {
            rx.await
                .unwrap_or_else(|_| Err(BillingError::Unavailable("a store call failed".into())))
        }
    }

    /// Runs calls until none wait. A call that panics drops its sender, so its caller gets
    /// an error and the others still run.
    fn drain(&self) {
        loop {
            let call = {
                let mut p = crate::locks::lock(&self.pending);
                match p.first.pop_front().or_else(|| p.later.pop_front()) {
                    Some(c) => c,
                    None => {
                        p.draining = false;
                        return;
                    }
                }
            };
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                call(self.store.as_ref(), &self.rates)
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::RedbStore;

    #[tokio::test]
    async fn holds_go_ahead_of_settlements_queued_before_them() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let queue = StoreQueue::new(
            Arc::new(RedbStore::open(dir.path()).expect("store")),
            TokenRates::default(),
        );
        let ran = Arc::new(Mutex::new(Vec::new()));
        let call = |name: &'static str, gate: Option<std::sync::mpsc::Receiver<()>>| {
            let ran = Arc::clone(&ran);
            move |_: &dyn Store, _: &TokenRates| {
                if let Some(g) = gate {
                    g.recv().expect("the gate opens");
                }
                ran.lock().expect("the log").push(name);
                Ok(())
            }
        };
        let (open, gate) = std::sync::mpsc::channel();
        // The drain is busy with the first call while the other two queue.
        let busy = queue.run(Urgency::Later, call("busy", Some(gate)));
        let settle = queue.run(Urgency::Later, call("settle", None));
        let hold = queue.run(Urgency::First, call("hold", None));
        open.send(()).expect("the gate");
        let (a, b, c) = tokio::join!(busy, settle, hold);
        a.and(b).and(c).expect("every call ran");
        let ran = ran.lock().expect("the log").clone();
        let at = |n| ran.iter().position(|r| *r == n).expect("ran");
        assert!(at("hold") < at("settle"), "{ran:?}");
    }
}
