//! The CoordinatorActor: which workers serve which model, and where a job goes. It places
//! jobs and never runs a model: the least busy worker of the model with room gets the job,
//! and when all are full the job is refused at once (429), so a busy pool answers instead
//! of hanging. (A worker that fills up between placement and intake refuses the job
//! itself, with the same result.) Draining workers get no new jobs; a model whose workers
//! all drain has none (503).

use actix::{Actor, Addr, Context, Handler, Message, MessageResult, ResponseFuture};

use crate::worker::actor::{GetLoad, WorkerActor, WorkerInfo, WorkerLoad};

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
        self.workers
            .retain(|(i, _)| i.worker_id != msg.info.worker_id);
        self.workers.push((msg.info, msg.addr));
    }
}

/// Choose the worker of `model` for one job; returns its id. The job itself goes to that
/// worker's bus inbox, as it will across nodes.
#[derive(Message)]
#[rtype(result = "Result<String, PlaceError>")]
pub struct Place {
    pub model: String,
}

impl Handler<Place> for CoordinatorActor {
    type Result = ResponseFuture<Result<String, PlaceError>>;

    fn handle(&mut self, msg: Place, _: &mut Context<Self>) -> Self::Result {
        let candidates: Vec<_> = self
            .workers
            .iter()
            .filter(|(i, _)| i.model_id == msg.model)
            .cloned()
            .collect();
        Box::pin(async move {
            if candidates.is_empty() {
                return Err(PlaceError::NoWorker(msg.model));
            }
            let serving: Vec<_> = loads(&candidates)
                .await
                .into_iter()
                .filter(|(_, _, l)| !l.draining)
                .collect();
            if serving.is_empty() {
                return Err(PlaceError::NoWorker(msg.model));
            }
            let free = serving
                .into_iter()
                .filter(|(_, _, l)| l.busy() < l.capacity)
                .min_by_key(|(_, _, l)| l.busy());
            free.map(|(info, _, _)| info.worker_id)
                .ok_or(PlaceError::Busy(msg.model))
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
pub async fn loads(
    workers: &[(WorkerInfo, Addr<WorkerActor>)],
) -> Vec<(WorkerInfo, Addr<WorkerActor>, WorkerLoad)> {
    let mut out = Vec::new();
    for (info, addr) in workers {
        if let Ok(load) = addr.send(GetLoad).await {
            out.push((info.clone(), addr.clone(), load));
        }
    }
    out
}
