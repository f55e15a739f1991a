//! The CoordinatorActor: which workers serve which model, and where a job goes. It places
//! jobs and never runs a model: the least busy worker of the model gets the job; if its
//! queue is full the next one is tried, and only when all are full is the job refused
//! (429), so a busy pool answers at once instead of hanging.

use actix::{Actor, Addr, Context, Handler, Message, MessageResult, ResponseFuture};

use crate::worker::actor::{GetLoad, RunJob, WorkerActor, WorkerInfo, WorkerLoad};
use crate::worker::engine_thread::Job;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlaceError {
    #[error("no worker serves model `{0}`")]
    NoWorker(String),
    #[error("every worker of model `{0}` is at capacity")]
    Busy(String),
}

#[derive(Default)]
pub struct CoordinatorActor {
    workers: Vec<(WorkerInfo, Addr<WorkerActor>)>,
}

impl Actor for CoordinatorActor {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    pub info: WorkerInfo,
    pub addr: Addr<WorkerActor>,
}

impl Handler<Register> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, msg: Register, _: &mut Context<Self>) {
        self.workers.retain(|(i, _)| i.worker_id != msg.info.worker_id);
        self.workers.push((msg.info, msg.addr));
    }
}

/// Place a job on a worker of `model`; returns the worker's id.
#[derive(Message)]
#[rtype(result = "Result<String, PlaceError>")]
pub struct Place {
    pub model: String,
    pub job: Job,
}

impl Handler<Place> for CoordinatorActor {
    type Result = ResponseFuture<Result<String, PlaceError>>;

    fn handle(&mut self, msg: Place, _: &mut Context<Self>) -> Self::Result {
        let candidates: Vec<_> = self.workers.iter().filter(|(i, _)| i.model_id == msg.model).cloned().collect();
        Box::pin(async move {
            if candidates.is_empty() {
                return Err(PlaceError::NoWorker(msg.model));
            }
            let mut ranked = loads(&candidates).await;
            ranked.sort_by_key(|(_, _, load)| load.busy());
            let mut job = msg.job;
            for (info, addr, _) in ranked {
                match addr.send(RunJob(job)).await {
                    Ok(Ok(())) => return Ok(info.worker_id),
                    Ok(Err(rejected)) => job = *rejected.job,
                    // The worker is gone, and the job with its mailbox.
                    Err(_) => return Err(PlaceError::Busy(msg.model)),
                }
            }
            Err(PlaceError::Busy(msg.model))
        })
    }
}

/// Every registered worker with its load (for `/v1/models` and status).
#[derive(Message)]
#[rtype(result = "Vec<(WorkerInfo, Addr<WorkerActor>)>")]
pub struct Workers;

impl Handler<Workers> for CoordinatorActor {
    type Result = MessageResult<Workers>;

    fn handle(&mut self, _: Workers, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.workers.clone())
    }
}

/// The current load of each worker; one that does not answer is left out, not waited for.
pub async fn loads(workers: &[(WorkerInfo, Addr<WorkerActor>)]) -> Vec<(WorkerInfo, Addr<WorkerActor>, WorkerLoad)> {
    let mut out = Vec::new();
    for (info, addr) in workers {
        if let Ok(load) = addr.send(GetLoad).await {
            out.push((info.clone(), addr.clone(), load));
        }
    }
    out
}
