//! The WorkerActor: one model's engine, as an actor. Its handlers only queue work on the
//! engine thread (never run the engine on the actor's executor), so they return at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::{Actor, Context, Handler, Message, MessageResult};

use super::engine_thread::{EngineThread, Job, Rejected};
use crate::engine::tokenizer::Tokenizer;
use crate::engine::Model;

/// What a worker serves, as it registers with the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub worker_id: String,
    pub model_id: String,
    pub context_length: usize,
}

/// A worker's load: what the coordinator places by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerLoad {
    pub queued: usize,
    pub running: usize,
    pub completed: usize,
    pub cancelled: usize,
}

impl WorkerLoad {
    /// Jobs in the worker now.
    pub fn busy(&self) -> usize {
        self.queued + self.running
    }
}

pub struct WorkerActor {
    pub info: WorkerInfo,
    engine: EngineThread,
}

impl WorkerActor {
    /// Starts the engine thread for `model` (`threads` threads, `max_queue` waiting jobs).
    pub fn new(info: WorkerInfo, model: Arc<Model>, tokenizer: Arc<Tokenizer>, threads: usize, max_queue: usize) -> std::io::Result<Self> {
        Ok(Self { info, engine: EngineThread::start(model, tokenizer, threads, max_queue)? })
    }
}

impl Actor for WorkerActor {
    type Context = Context<Self>;
}

/// Queue a job; a full queue hands it back at once.
#[derive(Message)]
#[rtype(result = "Result<(), Rejected>")]
pub struct RunJob(pub Job);

impl Handler<RunJob> for WorkerActor {
    type Result = Result<(), Rejected>;

    fn handle(&mut self, msg: RunJob, _: &mut Context<Self>) -> Self::Result {
        self.engine.submit(msg.0)
    }
}

#[derive(Message)]
#[rtype(result = "WorkerLoad")]
pub struct GetLoad;

impl Handler<GetLoad> for WorkerActor {
    type Result = MessageResult<GetLoad>;

    fn handle(&mut self, _: GetLoad, _: &mut Context<Self>) -> Self::Result {
        let s = self.engine.status();
        MessageResult(WorkerLoad {
            queued: s.queued.load(Ordering::SeqCst),
            running: s.running.load(Ordering::SeqCst),
            completed: s.completed.load(Ordering::SeqCst),
            cancelled: s.cancelled.load(Ordering::SeqCst),
        })
    }
}
