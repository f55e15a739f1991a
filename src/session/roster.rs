//! How a front sees the workers: for `/v1/models`, `/readyz`, `/metrics` and the admin's
//! drain. `supernet serve` asks its own worker actors ([`LocalRoster`]); a cluster front
//! reads the pool view the leader coordinator publishes
//! ([`crate::cluster::front_view::ClusterView`]).

use std::future::Future;
use std::pin::Pin;

use actix::{Actor, Addr, Context, Handler, Recipient};

use crate::api::error::ApiError;
use crate::protocol::{WorkerInfo, WorkerKind, WorkerLoad};
use crate::worker::actor::{GetLoad, SetDraining};

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

    /// The live media workers with their loads (a chat request asks which hosted tools
    /// can run).
    fn media_workers(&self) -> RosterFuture<'_, Vec<(WorkerInfo, WorkerLoad)>> {
        Box::pin(async move {
            let mut all = self.workers().await;
            all.retain(|(i, _)| i.kind == WorkerKind::Media);
            all
        })
    }
}

/// The workers of `supernet serve`, in this process.
pub struct LocalRoster {
    pub workers: Vec<LocalWorker>,
}

/// A worker actor of this process (an LLM or a media worker), as the roster asks it.
#[derive(Clone)]
pub struct LocalWorker {
    pub info: WorkerInfo,
    pub load: Recipient<GetLoad>,
    pub drain: Recipient<SetDraining>,
}

impl LocalWorker {
    pub fn new<A>(info: WorkerInfo, addr: &Addr<A>) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<GetLoad> + Handler<SetDraining>,
    {
        Self {
            info,
            load: addr.clone().recipient(),
            drain: addr.clone().recipient(),
        }
    }
}

impl LocalRoster {
    async fn loads(&self, media_only: bool) -> Vec<(WorkerInfo, WorkerLoad)> {
        let mut out = Vec::with_capacity(self.workers.len());
        let asked = self
            .workers
            .iter()
            .filter(|w| !media_only || w.info.kind == WorkerKind::Media);
        for w in asked {
            // One that does not answer is left out, not waited for.
            if let Ok(load) = w.load.send(GetLoad).await {
                out.push((w.info.clone(), load));
            }
        }
        out
    }
}

impl Roster for LocalRoster {
    fn media_workers(&self) -> RosterFuture<'_, Vec<(WorkerInfo, WorkerLoad)>> {
        Box::pin(self.loads(true))
    }

    fn workers(&self) -> RosterFuture<'_, Vec<(WorkerInfo, WorkerLoad)>> {
        Box::pin(self.loads(false))
    }

    fn set_draining<'a>(
        &'a self,
        worker_id: &'a str,
        drain: bool,
    ) -> RosterFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let w = self
                .workers
                .iter()
                .find(|w| w.info.worker_id == worker_id)
                .ok_or_else(|| ApiError::bad_body(format!("no worker `{worker_id}`")))?;
            w.drain
                .send(SetDraining(drain))
                .await
                .map_err(|e| ApiError::logged("the worker", e))
        })
    }

    fn local(&self) -> bool {
        true
    }
}
