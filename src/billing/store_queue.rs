//! One account's store calls, run one at a time, in order, by a single blocking task that
//! lives while calls wait.
//!
//! Calls on one account race for the same balance record, so run side by side they make
//! the store's optimistic commits retry against each other. Run one at a time, each through
//! its own trip to the blocking pool, a hot account instead pays a thread handoff per call.
//! Here the first call starts a drain task on the blocking pool, later calls join its queue,
//! and the task runs them back to back until the queue is empty: under load, many calls per
//! handoff.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use super::accounts::BillingError;
use super::pricing::TokenRates;
use crate::store::Store;

type Call = Box<dyn FnOnce(&dyn Store, &TokenRates) + Send>;

pub struct StoreQueue {
    store: Arc<dyn Store>,
    rates: TokenRates,
    /// Calls waiting, and whether a drain task is running.
    pending: Mutex<(VecDeque<Call>, bool)>,
}

impl StoreQueue {
    pub fn new(store: Arc<dyn Store>, rates: TokenRates) -> Arc<Self> {
        Arc::new(Self { store, rates, pending: Mutex::new((VecDeque::new(), false)) })
    }

    /// Queues `f` and resolves to its result.
    pub fn run<T: Send + 'static>(self: &Arc<Self>, f: impl FnOnce(&dyn Store, &TokenRates) -> Result<T, BillingError> + Send + 'static) -> impl std::future::Future<Output = Result<T, BillingError>> {
        let (tx, rx) = oneshot::channel();
        let call: Call = Box::new(move |store, rates| {
            let _ = tx.send(f(store, rates));
        });
        let start = {
            let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            p.0.push_back(call);
            !std::mem::replace(&mut p.1, true)
        };
        if start {
            let me = Arc::clone(self);
            tokio::task::spawn_blocking(move || me.drain());
        }
        async move { rx.await.unwrap_or_else(|_| Err(BillingError::Unavailable("a store call failed".into()))) }
    }

    /// Runs calls until none wait. A call that panics drops its sender, so its caller gets
    /// an error and the others still run.
    fn drain(&self) {
        loop {
            let call = {
                let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                match p.0.pop_front() {
                    Some(c) => c,
                    None => {
                        p.1 = false;
                        return;
                    }
                }
            };
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| call(self.store.as_ref(), &self.rates)));
        }
    }
}
