//! How a session asks for a worker: a placement request on the coordinator's stream (or
//! written by its hold, in a cluster), and a withdrawal when it gives up on a job that
//! waits. The coordinator answers on the session's node inbox as a
//! [`Placement`](crate::protocol::Placement).

use crate::api::error::ApiError;
use crate::bus::Outbox;
use crate::protocol::{self, CoordinatorCommand, JobSpec, PlaceRequest};

use super::Services;

/// Asks for a worker for `job`, avoiding the workers in `exclude`.
pub async fn request(
    s: &Services,
    job: JobSpec,
    priority: u8,
    exclude: Vec<String>,
) -> Result<(), ApiError> {
    let job_id = job.job_id.clone();
    let command =
        CoordinatorCommand::Place(Box::new(PlaceRequest::for_job(job, priority, exclude)));
    protocol::to_coordinator(s.bus.as_ref(), &s.node_id, &job_id, &command)
        .await
        .map_err(|e| ApiError::logged("the bus", e))
}

/// The first placement request of `job` as an entry for its hold to write with itself, where
/// the store can: the request is on its way the moment the hold is in, with no round trip
/// between.
pub fn outbox(s: &Services, job: &JobSpec, priority: u8) -> Result<Option<Outbox>, ApiError> {
    if !s.hold_carries_placement {
        return Ok(None);
    }
    let command = CoordinatorCommand::Place(Box::new(PlaceRequest::for_job(
        job.clone(),
        priority,
        Vec::new(),
    )));
    protocol::coordinator_outbox(&s.node_id, &job.job_id, &command)
        .map(Some)
        .map_err(|e| ApiError::logged("the placement request", e))
}

/// [`withdraw`] in the background.
pub fn withdraw_later(s: &std::sync::Arc<Services>, job_id: &str) {
    let (s, job_id) = (std::sync::Arc::clone(s), job_id.to_string());
    actix::spawn(async move { withdraw(&s, &job_id).await });
}

/// Takes a waiting job out of the coordinator's queue.
pub async fn withdraw(s: &Services, job_id: &str) {
    let command = CoordinatorCommand::Withdraw {
        job_id: job_id.to_string(),
    };
    if let Err(e) = protocol::to_coordinator(s.bus.as_ref(), &s.node_id, job_id, &command).await {
        tracing::warn!(job = %job_id, "withdrawing a waiting job: {e}");
    }
}
