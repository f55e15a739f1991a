//! The CoordinatorActor: where jobs go. One runs in `supernet serve`; in a cluster any
//! number run and one leads ([`lead`]). It places jobs and never runs a model. The rules
//! are in [`placer`], as plain code; this actor is their I/O.
//!
//! Every coordinator reads the workers' heartbeats (each through its own consumer group),
//! so a standby always knows the pool and takes over within one lease period. Only the
//! leader reads placement requests; it acknowledges one once it is placed or refused, so a
//! request still queued when the leader dies stays pending on the bus and the next leader
//! claims it when it takes over. On its tick the leader also buries silent workers,
//! publishes the pool view and runs billing's hold reaper.

pub mod lead;
pub mod placer;

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, WrapFuture};
use tracing::Instrument;

use self::lead::Lead;
use self::placer::{Action, Event, Placer, Settings};
use crate::billing::accounts::Billing;
use crate::bus::{read_stream, Ack, Bus};
use crate::clock::unix_ms;
use crate::protocol::{
    self, streams, CoordinatorCommand, Heartbeat, JobRef, NodeMessage, Placement, WorkerCommand,
    WorkerInfo, WorkerLoad,
};
use crate::telemetry::metrics::coordinator as metrics;
use crate::telemetry::trace_context::follow;

const TICK: Duration = Duration::from_millis(250);
const REAP_EVERY: Duration = Duration::from_secs(10);

/// What the coordinator keeps of one placement request while the placer has it.
#[derive(Clone)]
struct Ticket {
    /// Its bus delivery, acknowledged once the request is settled.
    delivery: String,
    /// Traced from arrival to dispatch, as the session's child.
    span: tracing::Span,
    since: Instant,
}

pub struct CoordinatorActor {
    node_id: String,
    bus: Arc<dyn Bus>,
    lead: Arc<dyn Lead>,
    billing: Arc<Billing>,
    placer: Placer<Ticket>,
    leading: Arc<AtomicBool>,
    /// Set on taking the lead: the placement reader first claims what the last leader left.
    claim: Arc<AtomicBool>,
    last_reap: Option<Instant>,
}

impl CoordinatorActor {
    pub fn new(
        node_id: String,
        bus: Arc<dyn Bus>,
        lead: Arc<dyn Lead>,
        billing: Arc<Billing>,
        settings: Settings,
    ) -> Self {
        Self {
            node_id,
            bus,
            lead,
            billing,
            placer: Placer::new(settings),
            leading: Arc::new(AtomicBool::new(false)),
            claim: Arc::new(AtomicBool::new(false)),
            last_reap: None,
        }
    }
}

impl Actor for CoordinatorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address().downgrade();
        let beats = read_stream(
            Arc::clone(&self.bus),
            streams::heartbeats(),
            format!("coord-{}", self.node_id),
            self.node_id.clone(),
            Ack::OnRead,
            move |d| {
                let Some(me) = me.upgrade() else {
                    return ControlFlow::Break(());
                };
                match d.envelope.payload::<Heartbeat>() {
                    Ok(hb) => me.do_send(Beat(hb)),
                    Err(e) => tracing::warn!("dropping an unreadable heartbeat: {e}"),
                }
                ControlFlow::Continue(())
            },
        );
        ctx.spawn(beats.into_actor(self));
        let requests = read_requests(
            ctx.address(),
            Arc::clone(&self.bus),
            self.node_id.clone(),
            Arc::clone(&self.leading),
            Arc::clone(&self.claim),
        );
        ctx.spawn(requests.into_actor(self));
        self.tick(ctx);
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
    }
}

/// Reads placement requests while this coordinator leads.
async fn read_requests(
    me: Addr<CoordinatorActor>,
    bus: Arc<dyn Bus>,
    node: String,
    leading: Arc<AtomicBool>,
    claim: Arc<AtomicBool>,
) {
    let stream = streams::coordinator();
    let group = streams::COORDINATOR_GROUP;
    loop {
        if !leading.load(Ordering::SeqCst) {
            tokio::time::sleep(TICK).await;
            continue;
        }
        let batch = if claim.swap(false, Ordering::SeqCst) {
            bus.claim_stale(&stream, group, &node, Duration::ZERO, 10_000)
                .await
        } else {
            bus.consume(
                &stream,
                group,
                &node,
                256,
                Duration::from_millis(500),
                Ack::Explicit,
            )
            .await
        };
        match batch {
            Ok(batch) => {
                for d in batch {
                    match d.envelope.payload::<CoordinatorCommand>() {
                        Ok(command) => me.do_send(Request {
                            delivery: d.id,
                            command,
                            traceparent: d.envelope.traceparent,
                        }),
                        Err(e) => {
                            tracing::warn!("dropping an unreadable placement request: {e}");
                            let _ = bus.ack(&stream, group, &[d.id]).await;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!("reading placement requests: {e}");
                me.do_send(Trouble);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Beat(Heartbeat);

impl Handler<Beat> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, Beat(beat): Beat, _: &mut Context<Self>) {
        let age = Duration::from_millis(unix_ms().saturating_sub(beat.sent_at_ms));
        self.step(Event::Heartbeat { beat, age });
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Trouble;

impl Handler<Trouble> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, _: Trouble, _: &mut Context<Self>) {
        self.step(Event::Trouble);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Request {
    delivery: String,
    command: CoordinatorCommand,
    /// The session's trace context.
    traceparent: Option<String>,
}

impl Handler<Request> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, msg: Request, _: &mut Context<Self>) {
        if !self.leading.load(Ordering::SeqCst) {
            // Left pending: the next leader claims it.
            return;
        }
        match msg.command {
            CoordinatorCommand::Place(request) => {
                let job = &request.job;
                let span = tracing::info_span!("coordinator.queue", job = %job.job_id, attempt = job.attempt, model = %job.model, waited_for = tracing::field::Empty);
                follow(&span, msg.traceparent.as_deref());
                let ticket = Ticket {
                    delivery: msg.delivery,
                    span,
                    since: Instant::now(),
                };
                let decision = Instant::now();
                self.step(Event::Request {
                    ticket,
                    request: *request,
                });
                metrics().decision.observe(decision.elapsed().as_secs_f64());
            }
            CoordinatorCommand::Withdraw { job_id } => {
                self.ack(vec![msg.delivery]);
                self.step(Event::Withdraw { job_id });
            }
        }
    }
}

/// The workers this coordinator knows, with their loads (for its `/metrics`).
#[derive(Message)]
#[rtype(result = "Vec<(WorkerInfo, WorkerLoad)>")]
pub struct PoolSnapshot;

impl Handler<PoolSnapshot> for CoordinatorActor {
    type Result = actix::MessageResult<PoolSnapshot>;

    fn handle(&mut self, _: PoolSnapshot, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(self.placer.pool())
    }
}

impl CoordinatorActor {
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let (lead, node) = (Arc::clone(&self.lead), self.node_id.clone());
        ctx.spawn(
            async move { lead.lead(&node).await }
                .into_actor(self)
                .map(|r, act, _| act.leadership(r)),
        );
        if !self.leading.load(Ordering::SeqCst) {
            return;
        }
        self.step(Event::Tick);
        let (lead, view) = (
            Arc::clone(&self.lead),
            protocol::PoolView {
                workers: self.placer.pool(),
            },
        );
        actix::spawn(async move {
            if let Err(e) = lead.publish(view).await {
                tracing::warn!("publishing the pool view: {e}");
            }
        });
        if self.last_reap.is_none_or(|at| at.elapsed() >= REAP_EVERY) {
            self.last_reap = Some(Instant::now());
            let billing = Arc::clone(&self.billing);
            actix::spawn(async move {
                match billing.reap_expired().await {
                    Ok(n) => metrics().holds_reaped.inc_by(n as u64),
                    Err(e) => tracing::warn!("reaping expired holds: {e}"),
                }
            });
        }
    }

    fn leadership(&mut self, r: Result<bool, String>) {
        match r {
            Ok(true) if !self.leading.swap(true, Ordering::SeqCst) => {
                metrics().leader.set(1);
                tracing::info!(node = %self.node_id, workers = self.placer.workers(), "leading");
                self.claim.store(true, Ordering::SeqCst);
            }
            Ok(false) if self.leading.swap(false, Ordering::SeqCst) => {
                metrics().leader.set(0);
                tracing::warn!(node = %self.node_id, "lost the leader lease; standing by");
                // What waits stays pending on the bus for the next leader.
                self.placer.abandon_queue();
                metrics().queue_depth.set(0);
            }
            Ok(_) => {}
            Err(e) => {
                self.step(Event::Trouble);
                tracing::warn!("renewing the leader lease: {e}");
            }
        }
    }

    /// Feeds the placer one event and carries out what it says.
    fn step(&mut self, event: Event<Ticket>) {
        for action in self.placer.handle(event, Instant::now()) {
            self.act(action);
        }
        metrics().queue_depth.set(self.placer.queue_len() as i64);
    }

    fn act(&self, action: Action<Ticket>) {
        let m = metrics();
        match action {
            Action::Place {
                ticket,
                worker_id,
                job,
            } => {
                m.placement.observe(ticket.since.elapsed().as_secs_f64());
                m.placements.with_label_values(&["placed"]).inc();
                self.dispatch(ticket, worker_id, job);
            }
            Action::Wait {
                ticket,
                job,
                reason,
            } => {
                ticket.span.record("waited_for", reason.as_str());
                let _in_trace = ticket.span.enter();
                tracing::debug!(job = %job.job_id, reason = reason.as_str(), "the job waits");
                self.tell(
                    &job,
                    NodeMessage::Placement {
                        attempt: job.attempt,
                        placement: Placement::Waiting(reason),
                    },
                );
            }
            Action::Refuse {
                ticket,
                job,
                busy,
                reason,
            } => {
                m.placements
                    .with_label_values(&[if busy { "queue_full" } else { "refused" }])
                    .inc();
                let _in_trace = ticket.span.enter();
                self.tell(
                    &job,
                    NodeMessage::Placement {
                        attempt: job.attempt,
                        placement: Placement::Refused { busy, reason },
                    },
                );
                self.ack(vec![ticket.delivery]);
            }
            Action::Dead { worker_id, jobs } => {
                m.workers_dead.inc();
                m.jobs_lost.inc_by(jobs.len() as u64);
                for job in jobs {
                    let lost = NodeMessage::Lost {
                        attempt: job.attempt,
                        worker_id: worker_id.clone(),
                    };
                    self.tell(&job, lost);
                }
            }
            Action::Withdrawn { ticket, job } => {
                m.placements.with_label_values(&["withdrawn"]).inc();
                let _in_trace = ticket.span.enter();
                let out = Placement::Refused {
                    busy: false,
                    reason: "withdrawn by its session".into(),
                };
                self.tell(
                    &job,
                    NodeMessage::Placement {
                        attempt: job.attempt,
                        placement: out,
                    },
                );
                self.ack(vec![ticket.delivery]);
            }
            Action::Drop(ticket) => self.ack(vec![ticket.delivery]),
        }
    }

    /// Sends the job to its worker, tells its session where it went, then acknowledges
    /// the request.
    fn dispatch(&self, ticket: Ticket, worker_id: String, job: Box<protocol::JobSpec>) {
        tracing::debug!(job = %job.job_id, attempt = job.attempt, worker = %worker_id, "placed");
        let (bus, node) = (Arc::clone(&self.bus), self.node_id.clone());
        let span =
            tracing::info_span!(parent: &ticket.span, "coordinator.place", worker = %worker_id);
        let dispatch = async move {
            let job_ref = job.job_ref();
            let run = WorkerCommand::Run(job);
            let placement =
                match protocol::to_worker(bus.as_ref(), &node, &worker_id, &job_ref.job_id, &run)
                    .await
                {
                    Ok(()) => Placement::Placed { worker_id },
                    Err(e) => Placement::Refused {
                        busy: false,
                        reason: format!("the bus: {e}"),
                    },
                };
            let placed = NodeMessage::Placement {
                attempt: job_ref.attempt,
                placement,
            };
            protocol::tell_node(
                bus.as_ref(),
                &node,
                &job_ref.reply_to,
                &job_ref.job_id,
                placed,
            )
            .await;
            acknowledge(bus.as_ref(), vec![ticket.delivery]).await;
        };
        actix::spawn(dispatch.instrument(span));
    }

    /// Sends `message` to a job's session, in the trace of the span the caller is in.
    fn tell(&self, job: &JobRef, message: NodeMessage) {
        let (bus, node, stream, job_id) = (
            Arc::clone(&self.bus),
            self.node_id.clone(),
            job.reply_to.clone(),
            job.job_id.clone(),
        );
        actix::spawn(
            async move { protocol::tell_node(bus.as_ref(), &node, &stream, &job_id, message).await }
                .in_current_span(),
        );
    }

    fn ack(&self, ids: Vec<String>) {
        let bus = Arc::clone(&self.bus);
        actix::spawn(async move { acknowledge(bus.as_ref(), ids).await });
    }
}

async fn acknowledge(bus: &dyn Bus, ids: Vec<String>) {
    if let Err(e) = bus
        .ack(&streams::coordinator(), streams::COORDINATOR_GROUP, &ids)
        .await
    {
        tracing::warn!("acknowledging placement requests: {e}");
    }
}
