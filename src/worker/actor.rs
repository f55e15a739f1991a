//! The WorkerActor: one model's engine, as an actor. It takes [`WorkerCommand`]s from its
//! bus inbox, queues jobs on the engine thread (never running the engine on the actor's
//! executor), and streams each job's events back to the inbox its session named. Placement
//! asks it for its load: directly in `supernet serve`, through its heartbeats in a cluster
//! ([`crate::cluster::worker_node`]).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::{Actor, AsyncContext, Context, Handler, Message, MessageResult, WrapFuture};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::engine_thread::{EngineConfig, EngineThread, Job, JobEvent, JobRunner, SubmitError};
use super::protocol::{
    JobRef, JobSpec, NodeMessage, WorkerCommand, WorkerEvent, KIND_COMMAND, KIND_NODE,
};
use super::simulator::Simulator;
use crate::bus::{post, read_stream, send, streams, Ack, Bus, BusError, BusFuture};
use crate::engine::batch::BatchStats;
use crate::engine::kv::BLOCK;
use crate::engine::tokenizer::Tokenizer;
use crate::engine::Model;
use crate::telemetry::trace_context::follow;

/// Entries kept in a worker inbox or a reply stream; far more than a consumer that keeps
/// up ever leaves.
const STREAM_LEN: usize = 100_000;
/// Consumer group of worker inboxes.
const GROUP: &str = "workers";
/// Received job ids kept between two heartbeats at most; beyond, the coordinator's grace
/// period covers them.
const MAX_RECEIVED: usize = 10_000;

/// What kind of work a worker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WorkerKind {
    Llm,
    Media,
}

/// What a worker serves, as it registers with the coordinator: its capabilities.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkerInfo {
    pub worker_id: String,
    pub kind: WorkerKind,
    pub model_id: String,
    pub context_length: usize,
    /// Sequences decoded together.
    pub max_batch: usize,
    /// KV-cache positions it has.
    pub kv_capacity: usize,
    /// A simulator (`supernet worker --simulate`): no model behind it, placeholder tokens.
    /// Coordinators place nothing on it unless simulation is allowed.
    pub simulated: bool,
}

/// A worker's load: what the coordinator places by.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorkerLoad {
    pub queued: usize,
    pub running: usize,
    pub completed: usize,
    pub cancelled: usize,
    /// The most jobs it holds at once (running and queued).
    pub capacity: usize,
    /// Taking no new jobs (an operator drained it, or it is shutting down); the ones it has
    /// still finish.
    pub draining: bool,
    /// KV-cache positions in use.
    pub kv_used: usize,
    /// Measured decode speed, summed over the running sequences.
    pub tokens_per_s: f32,
    /// The batch scheduler's figures: KV blocks, prefix cache, batch sizes.
    pub batch: BatchStats,
    /// The jobs it holds.
    pub jobs: Vec<JobRef>,
}

impl WorkerLoad {
    /// Jobs in the worker now.
    pub fn busy(&self) -> usize {
        self.queued + self.running
    }
}

pub struct WorkerActor {
    pub info: WorkerInfo,
    engine: Box<dyn JobRunner>,
    bus: Arc<dyn Bus>,
    /// The jobs taken and not yet finished, with their cancel flags.
    running: HashMap<String, (Arc<AtomicBool>, JobRef)>,
    /// Jobs that reached this worker since the last [`TakeReceived`].
    received: Vec<String>,
    draining: bool,
}

impl WorkerActor {
    /// An LLM worker `worker_id` serving `model` as `model_id`: starts its engine thread.
    pub fn new(
        worker_id: &str,
        model_id: &str,
        model: Arc<Model>,
        tokenizer: Arc<Tokenizer>,
        config: EngineConfig,
        bus: Arc<dyn Bus>,
    ) -> std::io::Result<Self> {
        let engine = EngineThread::start(model, tokenizer, config)?;
        Ok(Self::with_runner(
            worker_id,
            model_id,
            config.batch.max_batch,
            Box::new(engine),
            bus,
            false,
        ))
    }

    /// A simulated worker `worker_id` serving the simulator's made-up model.
    pub fn simulated(worker_id: &str, simulator: Simulator, bus: Arc<dyn Bus>) -> Self {
        let max_batch = simulator.max_batch();
        Self::with_runner(
            worker_id,
            super::simulator::card::MODEL_ID,
            max_batch,
            Box::new(simulator),
            bus,
            true,
        )
    }

    fn with_runner(
        worker_id: &str,
        model_id: &str,
        max_batch: usize,
        engine: Box<dyn JobRunner>,
        bus: Arc<dyn Bus>,
        simulated: bool,
    ) -> Self {
        let info = WorkerInfo {
            worker_id: worker_id.into(),
            kind: WorkerKind::Llm,
            model_id: model_id.into(),
            context_length: engine.context(),
            max_batch,
            kv_capacity: engine.status().batch().kv_blocks_total * BLOCK,
            simulated,
        };
        Self {
            info,
            engine,
            bus,
            running: HashMap::new(),
            received: Vec::new(),
            draining: false,
        }
    }
}

impl Actor for WorkerActor {
    type Context = Context<Self>;

    /// Reads the inbox for as long as the actor lives.
    fn started(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address().downgrade();
        let stream = streams::worker(&self.info.worker_id);
        let read = read_stream(
            Arc::clone(&self.bus),
            stream,
            GROUP.into(),
            self.info.worker_id.clone(),
            Ack::Explicit,
            move |d| {
                let env = d.envelope;
                let Some(me) = me.upgrade() else {
                    return ControlFlow::Break(());
                };
                match env.payload::<WorkerCommand>() {
                    Ok(c) => me.do_send(Command(c, env.traceparent)),
                    Err(e) => {
                        tracing::warn!(kind = %env.kind, "dropping an unreadable worker command: {e}")
                    }
                }
                ControlFlow::Continue(())
            },
        );
        ctx.spawn(read.into_actor(self));
    }
}

/// A command from the inbox, with its sender's trace context.
#[derive(Message)]
#[rtype(result = "()")]
struct Command(WorkerCommand, Option<String>);

impl Handler<Command> for WorkerActor {
    type Result = ();

    fn handle(&mut self, msg: Command, ctx: &mut Context<Self>) {
        match msg.0 {
            WorkerCommand::Run(spec) => {
                if self.received.len() < MAX_RECEIVED {
                    self.received.push(spec.job_id.clone());
                }
                let span = tracing::info_span!("worker.job", job = %spec.job_id, attempt = spec.attempt, worker = %self.info.worker_id, model = %spec.model, prompt_tokens = spec.prompt.len(), completion_tokens = tracing::field::Empty);
                follow(&span, msg.1.as_deref());
                self.run(*spec, span, ctx)
            }
            WorkerCommand::Cancel { job_id } => {
                if let Some((flag, _)) = self.running.get(&job_id) {
                    flag.store(true, Ordering::SeqCst);
                }
            }
        }
    }
}

impl WorkerActor {
    fn run(&mut self, spec: JobSpec, span: tracing::Span, ctx: &mut Context<Self>) {
        let job_ref = spec.job_ref();
        let reply = Reply {
            bus: Arc::clone(&self.bus),
            worker_id: self.info.worker_id.clone(),
            stream: spec.reply_to,
            job_id: spec.job_id.clone(),
            attempt: spec.attempt,
            span,
        };
        let refusal = if spec.model != self.info.model_id {
            Some(format!(
                "worker {} serves `{}`, not `{}`",
                self.info.worker_id, self.info.model_id, spec.model
            ))
        } else if self.draining {
            Some(format!("worker {} is draining", self.info.worker_id))
        } else {
            None
        };
        if let Some(reason) = refusal {
            ctx.spawn(reply.reject(false, reason).into_actor(self));
            return;
        }
        let (tx, rx) = unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Job {
            id: spec.job_id.clone(),
            prompt: spec.prompt,
            params: spec.params,
            resume: spec.resume,
            cancel: Arc::clone(&cancel),
            events: tx,
        };
        match self.engine.submit(job) {
            Ok(()) => {
                self.running.insert(spec.job_id.clone(), (cancel, job_ref));
                // A task of its own, not `ctx.spawn`: a context polls every future spawned
                // in it whenever any of them wakes, so each token would poll every job's
                // forwarding.
                let (me, job_id) = (ctx.address().downgrade(), spec.job_id);
                actix::spawn(async move {
                    reply.forward(rx).await;
                    if let Some(me) = me.upgrade() {
                        me.do_send(Forwarded(job_id));
                    }
                });
            }
            Err(rejected) => {
                let busy = rejected.reason == SubmitError::QueueFull;
                let reason = rejected.reason.to_string();
                ctx.spawn(reply.reject(busy, reason).into_actor(self));
            }
        }
    }
}

/// A job's last event is on the bus: the worker no longer holds it.
#[derive(Message)]
#[rtype(result = "()")]
struct Forwarded(String);

impl Handler<Forwarded> for WorkerActor {
    type Result = ();

    fn handle(&mut self, msg: Forwarded, _: &mut Context<Self>) {
        self.running.remove(&msg.0);
    }
}

/// Where one job's events go.
struct Reply {
    bus: Arc<dyn Bus>,
    worker_id: String,
    stream: String,
    job_id: String,
    attempt: u32,
    /// The job's trace span; what the worker sends back carries it.
    span: tracing::Span,
}

impl Reply {
    /// Queues `event` for the session now, behind what this reply queued before.
    fn post(&self, event: WorkerEvent) -> BusFuture<'_, ()> {
        post(
            self.bus.as_ref(),
            &self.stream,
            STREAM_LEN,
            KIND_NODE,
            &self.worker_id,
            &self.job_id,
            &NodeMessage::Worker {
                attempt: self.attempt,
                event,
            },
        )
    }

    async fn reject(self, busy: bool, reason: String) {
        let sent = self
            .span
            .in_scope(|| self.post(WorkerEvent::Rejected { busy, reason }));
        self.logged(sent.await);
    }

    fn logged(&self, sent: Result<(), BusError>) {
        log_undelivered(&self.job_id, &self.stream, sent)
    }

    /// Accepted, then every event of the job until its last; traced as `prefill` (waiting
    /// for the engine included) up to the first text, then `decode`. An event is queued as
    /// soon as the engine gives it, without waiting for the one before to be written, so
    /// events that come faster than a bus round trip share one.
    async fn forward(self, mut events: UnboundedReceiver<JobEvent>) {
        let mut sending = FuturesUnordered::new();
        sending.push(self.span.in_scope(|| {
            self.post(WorkerEvent::Accepted {
                worker_id: self.worker_id.clone(),
            })
        }));
        let mut phase = self.span.in_scope(|| tracing::info_span!("prefill"));
        let mut decoding = false;
        loop {
            tokio::select! {
                Some(sent) = sending.next(), if !sending.is_empty() => self.logged(sent),
                ev = events.recv() => {
                    let Some(ev) = ev else { break };
                    let last = !matches!(ev, JobEvent::Text { .. });
                    if !decoding && !last {
                        decoding = true;
                        phase = self.span.in_scope(|| tracing::info_span!("decode"));
                    }
                    if let JobEvent::Finished { completion_tokens, .. } = &ev {
                        self.span.record("completion_tokens", completion_tokens);
                    }
                    sending.push(phase.in_scope(|| self.post(WorkerEvent::Job(ev))));
                    if last {
                        break;
                    }
                }
            }
        }
        while let Some(sent) = sending.next().await {
            self.logged(sent);
        }
    }
}

/// Puts a command on a worker's inbox.
pub async fn send_command(
    bus: &dyn Bus,
    sender: &str,
    worker_id: &str,
    job_id: &str,
    command: &WorkerCommand,
) -> Result<(), crate::bus::BusError> {
    send(
        bus,
        &streams::worker(worker_id),
        STREAM_LEN,
        KIND_COMMAND,
        sender,
        job_id,
        command,
    )
    .await
}

/// Tells the session of `job_id` something on its node's inbox `stream`; a failure is
/// logged (the session's own timeouts cover a message that never arrives).
pub async fn send_to_node(
    bus: &dyn Bus,
    sender: &str,
    stream: &str,
    job_id: &str,
    message: NodeMessage,
) {
    log_undelivered(
        job_id,
        stream,
        send(bus, stream, STREAM_LEN, KIND_NODE, sender, job_id, &message).await,
    )
}

fn log_undelivered(job_id: &str, stream: &str, sent: Result<(), BusError>) {
    if let Err(e) = sent {
        tracing::error!(job = %job_id, %stream, "telling a session: {e}");
    }
}

#[derive(Message)]
#[rtype(result = "WorkerLoad")]
pub struct GetLoad;

impl Handler<GetLoad> for WorkerActor {
    type Result = MessageResult<GetLoad>;

    fn handle(&mut self, _: GetLoad, _: &mut Context<Self>) -> Self::Result {
        let s = self.engine.status();
        let batch = s.batch();
        MessageResult(WorkerLoad {
            queued: s.queued(),
            running: batch.running,
            completed: s.completed(),
            cancelled: s.cancelled(),
            capacity: self.engine.capacity(),
            draining: self.draining,
            kv_used: batch.kv_blocks_used * BLOCK,
            tokens_per_s: s.tokens_per_s(),
            batch,
            jobs: self.running.values().map(|(_, r)| r.clone()).collect(),
        })
    }
}

/// The jobs that reached this worker since the last call (for its next heartbeat).
#[derive(Message)]
#[rtype(result = "Vec<String>")]
pub struct TakeReceived;

impl Handler<TakeReceived> for WorkerActor {
    type Result = MessageResult<TakeReceived>;

    fn handle(&mut self, _: TakeReceived, _: &mut Context<Self>) -> Self::Result {
        MessageResult(std::mem::take(&mut self.received))
    }
}

/// Stop taking new jobs (`true`) or take them again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetDraining(pub bool);

impl Handler<SetDraining> for WorkerActor {
    type Result = ();

    fn handle(&mut self, msg: SetDraining, _: &mut Context<Self>) {
        self.draining = msg.0;
        tracing::info!(worker = %self.info.worker_id, draining = msg.0, "worker drain state changed");
    }
}
