//! Where a front finds workers: the coordinator actor of its own process (`supernet
//! serve`), or the cluster's leader coordinator over the bus (`supernet front`). Sessions
//! place jobs through it, and the front's model and status routes read the workers' loads
//! from it.

use std::sync::Arc;

use actix::Addr;
use tracing::Instrument;

use super::actor::Services;
use crate::api::error::ApiError;
use crate::bus::{send, streams, Outbox};
use crate::cluster::front_view::ClusterView;
use crate::cluster::protocol::{CoordinatorCommand, PlaceRequest, KIND_COORDINATOR};
use crate::coordinator::{loads, CoordinatorActor, Place, PlaceError, Workers};
use crate::worker::actor::{send_command, WorkerInfo, WorkerLoad};
use crate::worker::protocol::{JobSpec, Placement, WorkerCommand};

/// Entries kept on the coordinator's stream.
const COORDINATOR_STREAM_LEN: usize = 100_000;

pub enum Pool {
    Local(Addr<CoordinatorActor>),
    Cluster(Arc<ClusterView>),
}

impl Pool {
    /// Every live worker with its load; empty when the pool cannot be asked.
    pub async fn workers(&self) -> Vec<(WorkerInfo, WorkerLoad)> {
        match self {
            Pool::Local(c) => match c.send(Workers).await {
                Ok(w) => loads(&w)
                    .await
                    .into_iter()
                    .map(|(i, _, l)| (i, l))
                    .collect(),
                Err(e) => {
                    tracing::error!("the coordinator does not answer: {e}");
                    Vec::new()
                }
            },
            Pool::Cluster(view) => view.workers(),
        }
    }

    /// Places `job`, avoiding the workers in `exclude`. Locally the answer is returned; in a
    /// cluster (`Ok(None)`) it comes to the session's inbox as a [`Placement`].
    pub async fn place(
        &self,
        s: &Services,
        job: JobSpec,
        priority: u8,
        exclude: Vec<String>,
    ) -> Result<Option<(u32, Placement)>, ApiError> {
        match self {
            Pool::Local(c) => {
                let attempt = job.attempt;
                let span =
                    tracing::info_span!("placement", attempt, worker = tracing::field::Empty);
                let placement = match c
                    .send(Place {
                        model: job.model.clone(),
                    })
                    .instrument(span.clone())
                    .await
                    .map_err(|e| ApiError::logged("the coordinator", e))?
                {
                    Ok(worker_id) => {
                        span.record("worker", worker_id.as_str());
                        let job_id = job.job_id.clone();
                        let run = WorkerCommand::Run(Box::new(job));
                        send_command(s.bus.as_ref(), &s.node_id, &worker_id, &job_id, &run)
                            .instrument(span)
                            .await
                            .map_err(|e| ApiError::logged("the bus", e))?;
                        Placement::Placed { worker_id }
                    }
                    Err(e @ PlaceError::Busy(_)) => Placement::Refused {
                        busy: true,
                        reason: e.to_string(),
                    },
                    Err(e @ PlaceError::NoWorker(_)) => Placement::Refused {
                        busy: false,
                        reason: e.to_string(),
                    },
                };
                Ok(Some((attempt, placement)))
            }
            Pool::Cluster(_) => {
                let job_id = job.job_id.clone();
                publish(s, &job_id, &place_request(job, priority, exclude)).await?;
                Ok(None)
            }
        }
    }

    /// In a cluster, the first placement request of `job` as an entry for the hold to
    /// write with itself (see [`Outbox`]): the request is on its way the moment the hold is
    /// in, with no round trip between. Locally, none: the job is placed once held.
    pub fn placement_outbox(
        &self,
        s: &Services,
        job: &JobSpec,
        priority: u8,
    ) -> Result<Option<Outbox>, ApiError> {
        match self {
            Pool::Local(_) => Ok(None),
            Pool::Cluster(_) => Outbox::new(
                streams::coordinator(),
                COORDINATOR_STREAM_LEN,
                KIND_COORDINATOR,
                &s.node_id,
                &job.job_id,
                &place_request(job.clone(), priority, Vec::new()),
            )
            .map(Some)
            .map_err(|e| ApiError::logged("the placement request", e)),
        }
    }

    /// Takes a waiting job out of the coordinator's queue (a cluster's; a local placement
    /// never waits).
    pub async fn withdraw(&self, s: &Services, job_id: &str) {
        if let Pool::Cluster(_) = self {
            if let Err(e) = publish(
                s,
                job_id,
                &CoordinatorCommand::Withdraw {
                    job_id: job_id.to_string(),
                },
            )
            .await
            {
                tracing::warn!(job = %job_id, "withdrawing a waiting job: {}", e.message);
            }
        }
    }
}

fn place_request(job: JobSpec, priority: u8, exclude: Vec<String>) -> CoordinatorCommand {
    CoordinatorCommand::Place(Box::new(PlaceRequest {
        prefix: PlaceRequest::prefix_of(&job.prompt),
        job,
        priority,
        exclude,
    }))
}

async fn publish(s: &Services, job_id: &str, command: &CoordinatorCommand) -> Result<(), ApiError> {
    send(
        s.bus.as_ref(),
        &streams::coordinator(),
        COORDINATOR_STREAM_LEN,
        KIND_COORDINATOR,
        &s.node_id,
        job_id,
        command,
    )
    .await
    .map_err(|e| ApiError::logged("the bus", e))
}
