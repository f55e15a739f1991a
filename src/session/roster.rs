//! How a front sees the workers: for `/v1/models`, `/readyz`, `/metrics` and the admin's
//! drain. `supernet serve` asks its own worker actors ([`LocalRoster`]); a cluster front
//! reads the pool view the leader coordinator publishes
//! ([`crate::cluster::front_view::ClusterView`]).

use std::future::Future;
use std::pin::Pin;

use actix::Addr;

use crate::api::error::ApiError;
use crate::protocol::{WorkerInfo, WorkerLoad};
use crate::worker::actor::{GetLoad, SetDraining, WorkerActor};

pub type RosterFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Roster: Send + Sync {
    /// Every live worker with its load.
    fn workers(&self) -> RosterFuture<'_, Vec<(WorkerInfo, WorkerLoad)>>;

    /// Stops giving `worker_id` new jobs (`drain`), or gives it jobs again.
    fn set_draining<'a>(
        &'a self,
        worker_id: &'a str,
        drain: bool,
    ) -> RosterFuture<'a, Result<(), ApiError>>;

    /// Whether the workers run in this process (so `/metrics` shows their engines).
    fn local(&self) -> bool;
}

/// The workers of `supernet serve`, in this process.
pub struct LocalRoster {
    pub workers: Vec<(WorkerInfo, Addr<WorkerActor>)>,
}

impl Roster for LocalRoster {
    fn workers(&self) -> RosterFuture<'_, Vec<(WorkerInfo, WorkerLoad)>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(self.workers.len());
            for (info, addr) in &self.workers {
                // One that does not answer is left out, not waited for.
                if let Ok(load) = addr.send(GetLoad).await {
                    out.push((info.clone(), load));
                }
            }
            out
        })
    }

    fn set_draining<'a>(
        &'a self,
        worker_id: &'a str,
        drain: bool,
    ) -> RosterFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let (_, addr) = self
                .workers
                .iter()
                .find(|(i, _)| i.worker_id == worker_id)
                .ok_or_else(|| ApiError::bad_body(format!("no worker `{worker_id}`")))?;
            addr.send(SetDraining(drain))
                .await
                .map_err(|e| ApiError::logged("the worker", e))
        })
    }

    fn local(&self) -> bool {
        true
    }
}
