//! The WorkerActor: one model's engine, as an actor. It takes [`WorkerCommand`]s from its
//! bus inbox, reads a job's images from the bus ([`protocol::images`]), queues jobs on the
//! engine thread (never running the engine on the actor's executor), and streams each job's events back to the inbox its session named. It
//! reports its capabilities and load to the coordinator by heartbeat, every [`HEARTBEAT`]
//! and soon after a job ends or its drain state changes, in `supernet serve` and in a
//! cluster alike.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, MessageResult,
    ResponseActFuture, WrapFuture,
};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::engine_thread::{
    EngineConfig, EngineThread, ImageInput, Job, JobEvent, JobRunner, SubmitError,
};
use super::membership;
use super::simulator::Simulator;
use crate::bus::{Bus, BusError, BusFuture};
use crate::engine::kv::BLOCK;
use crate::engine::tokenizer::Tokenizer;
use crate::engine::vision::tower::VisionTower;
use crate::engine::Model;
use crate::protocol::{
    self, images, JobRef, JobSpec, NodeMessage, WorkerCommand, WorkerEvent, WorkerInfo, WorkerKind,
    WorkerLoad,
};
use crate::telemetry::trace_context::follow;

/// How often a worker reports; a coordinator declares it dead after a few missed beats.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// How long after a job ends its heartbeat goes: jobs that end together share one.
const BEAT_AFTER_END: Duration = Duration::from_millis(2);
/// Received job ids kept between two heartbeats at most; beyond, the coordinator's grace
/// period covers them.
const MAX_RECEIVED: usize = 10_000;

pub struct WorkerActor {
    pub info: WorkerInfo,
    engine: Box<dyn JobRunner>,
    bus: Arc<dyn Bus>,
    /// The jobs taken and not yet finished, with their cancel flags.
    running: HashMap<String, (Arc<AtomicBool>, JobRef)>,
    /// Jobs that reached this worker since the last heartbeat.
    received: Vec<String>,
    draining: bool,
    /// A heartbeat is scheduled (after a job ended).
    beat_due: bool,
    /// Said it is leaving: no more heartbeats.
    left: bool,
}

impl WorkerActor {
    /// An LLM worker `worker_id` serving `model` as `model_id`: starts its engine thread.
    pub fn new(
        worker_id: &str,
        model_id: &str,
        model: Arc<Model>,
        tokenizer: Arc<Tokenizer>,
        tower: Option<Arc<VisionTower>>,
        config: EngineConfig,
        bus: Arc<dyn Bus>,
    ) -> std::io::Result<Self> {
        let engine = EngineThread::start(model, tokenizer, tower, config)?;
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
            context_length: engine.context() as u64,
            max_batch: max_batch as u64,
            kv_capacity: (engine.status().batch().kv_blocks_total * BLOCK) as u64,
            simulated,
            pipelines: Vec::new(),
        };
        Self {
            info,
            engine,
            bus,
            running: HashMap::new(),
            received: Vec::new(),
            draining: false,
            beat_due: false,
            left: false,
        }
    }

    fn load(&self) -> WorkerLoad {
        let s = self.engine.status();
        let batch = s.batch();
        WorkerLoad {
            queued: s.queued() as u64,
            running: batch.running as u64,
            completed: s.completed() as u64,
            cancelled: s.cancelled() as u64,
            capacity: self.engine.capacity() as u64,
            draining: self.draining,
            kv_used: (batch.kv_blocks_used * BLOCK) as u64,
            tokens_per_s: s.tokens_per_s(),
            batch: (&batch).into(),
            jobs: self.running.values().map(|(_, r)| r.clone()).collect(),
        }
    }

    /// A heartbeat of the worker as it is now, to be sent. Its `received` list starts again
    /// from empty.
    fn beat(&mut self, leaving: bool) -> BusFuture<'static, ()> {
        let received = std::mem::take(&mut self.received);
        membership::heartbeat(&self.bus, &self.info, self.load(), received, leaving)
    }

    fn beat_in_background(&mut self) {
        if !self.left {
            membership::in_background(self.beat(false));
        }
    }
}

impl Actor for WorkerActor {
    type Context = Context<Self>;

    /// Reads the inbox for as long as the actor lives, and heartbeats.
    fn started(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address().downgrade();
        let read = membership::read_inbox(
            Arc::clone(&self.bus),
            &self.info.worker_id,
            move |c, traceparent| match me.upgrade() {
                Some(me) => {
                    me.do_send(Command(c, traceparent));
                    ControlFlow::Continue(())
                }
                None => ControlFlow::Break(()),
            },
        );
        ctx.spawn(read.into_actor(self));
        self.beat_in_background();
        ctx.run_interval(HEARTBEAT, |act, _| act.beat_in_background());
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
        // Held from now: a cancel that comes while the images are read still stops it.
        let cancel = Arc::new(AtomicBool::new(false));
        self.running
            .insert(spec.job_id.clone(), (Arc::clone(&cancel), job_ref));
        let (tx, rx) = unbounded_channel();
        let job = Job {
            id: spec.job_id,
            prompt: spec.prompt,
            params: spec.params.into(),
            resume: spec.resume.into(),
            images: Vec::new(),
            cancel,
            events: tx,
        };
        if spec.images.is_empty() {
            return self.submit(job, reply, rx, ctx);
        }
        let bus = Arc::clone(&self.bus);
        let read = async move {
            let bytes = images::fetch(bus.as_ref(), &spec.images).await?;
            let runs = spec.images.into_iter().map(|im| im.runs);
            Ok::<_, String>(
                bytes
                    .into_iter()
                    .zip(runs)
                    .map(|(data, runs)| ImageInput { data, runs })
                    .collect(),
            )
        };
        ctx.spawn(read.into_actor(self).map(move |read, act, ctx| match read {
            Ok(images) => act.submit(Job { images, ..job }, reply, rx, ctx),
            Err(reason) => {
                act.running.remove(&job.id);
                ctx.spawn(reply.reject(false, reason).into_actor(act));
            }
        }));
    }

    /// Queues the job on the engine and forwards its events, or refuses it if the engine
    /// cannot take it.
    fn submit(
        &mut self,
        job: Job,
        reply: Reply,
        events: UnboundedReceiver<JobEvent>,
        ctx: &mut Context<Self>,
    ) {
        let job_id = job.id.clone();
        match self.engine.submit(job) {
            Ok(()) => {
                // A task of its own, not `ctx.spawn`: a context polls every future spawned
                // in it whenever any of them wakes, so each token would poll every job's
                // forwarding.
                let me = ctx.address().downgrade();
                actix::spawn(async move {
                    reply.forward(events).await;
                    if let Some(me) = me.upgrade() {
                        me.do_send(Forwarded(job_id));
                    }
                });
            }
            Err(rejected) => {
                self.running.remove(&job_id);
                let busy = rejected.reason == SubmitError::QueueFull;
                let reason = rejected.reason.to_string();
                ctx.spawn(reply.reject(busy, reason).into_actor(self));
            }
        }
    }
}

/// A job's last event is on the bus: the worker no longer holds it, and says so soon.
#[derive(Message)]
#[rtype(result = "()")]
struct Forwarded(String);

impl Handler<Forwarded> for WorkerActor {
    type Result = ();

    fn handle(&mut self, msg: Forwarded, ctx: &mut Context<Self>) {
        self.running.remove(&msg.0);
        if !self.beat_due {
            self.beat_due = true;
            ctx.run_later(BEAT_AFTER_END, |act, _| {
                act.beat_due = false;
                act.beat_in_background();
            });
        }
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
        protocol::post_to_node(
            self.bus.as_ref(),
            &self.worker_id,
            &self.stream,
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
        protocol::log_undelivered(&self.job_id, &self.stream, sent)
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
                    sending.push(phase.in_scope(|| self.post(wire_event(ev))));
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

/// An engine event as the session hears it.
fn wire_event(ev: JobEvent) -> WorkerEvent {
    match ev {
        JobEvent::Text {
            text,
            tokens,
            logprobs,
        } => WorkerEvent::Text {
            text,
            tokens,
            logprobs: logprobs.into_iter().map(Into::into).collect(),
        },
        JobEvent::Finished {
            finish,
            prompt_tokens,
            completion_tokens,
        } => WorkerEvent::Finished {
            finish: finish.into(),
            prompt_tokens: prompt_tokens as u64,
            completion_tokens: completion_tokens as u64,
        },
        JobEvent::Failed(reason) => WorkerEvent::Failed(reason),
    }
}

#[derive(Message)]
#[rtype(result = "WorkerLoad")]
pub struct GetLoad;

impl Handler<GetLoad> for WorkerActor {
    type Result = MessageResult<GetLoad>;

    fn handle(&mut self, _: GetLoad, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.load())
    }
}

/// Stop taking new jobs (`true`) or take them again. Answered once the heartbeat that
/// says so is on the bus, so the coordinator hears it before anything sent after.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetDraining(pub bool);

impl Handler<SetDraining> for WorkerActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: SetDraining, _: &mut Context<Self>) -> Self::Result {
        self.draining = msg.0;
        tracing::info!(worker = %self.info.worker_id, draining = msg.0, "worker drain state changed");
        let sent = self.beat(false);
        Box::pin(sent.into_actor(self).map(|r, _, _| {
            if let Err(e) = r {
                tracing::warn!("sending a heartbeat: {e}");
            }
        }))
    }
}

/// The worker has drained and goes: its last heartbeat says it is leaving.
#[derive(Message)]
#[rtype(result = "Result<(), BusError>")]
pub struct Leave;

impl Handler<Leave> for WorkerActor {
    type Result = ResponseActFuture<Self, Result<(), BusError>>;

    fn handle(&mut self, _: Leave, _: &mut Context<Self>) -> Self::Result {
        self.left = true;
        Box::pin(self.beat(true).into_actor(self))
    }
}
