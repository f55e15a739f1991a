//! `supernet coordinator`: placement for the whole cluster, by whichever coordinator holds
//! the leader lease. Any number run; one leads, the others stand by.
//!
//! Every coordinator reads the worker heartbeats (each through its own consumer group), so a
//! standby always knows the pool and takes over within one lease period. Only the leader
//! reads placement requests; it acknowledges one once it is placed or refused, so a request
//! still queued when the leader dies stays pending in Redis and the next leader claims it
//! (`XAUTOCLAIM`) when it takes over.
//!
//! Placement: among the live, undrained workers of the model with room, the least loaded
//! (jobs held, then KV use) gets the job, except that a worker that recently served the same
//! prompt prefix keeps it while it is at most one job busier. A job that finds no room waits
//! in a queue ordered by tier priority, then by how few jobs its account has in flight, then
//! by arrival, and its session is told why it waits. A worker silent for longer than
//! `--dead-after` is declared dead, and the session of every job it held is told the
//! attempt is lost, so the job moves.
//!
//! Simulated workers (`supernet worker --simulate`) are ignored unless the coordinator runs
//! with `--allow-simulated`, so a simulator can never take real traffic by mistake.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, WrapFuture};
use tracing::Instrument;

use super::protocol::{unix_ms, CoordinatorCommand, Heartbeat, PlaceRequest, PoolView};
use super::state::ClusterState;
use crate::bus::{read_stream, streams, Ack, Bus};
use crate::store::{reap_expired, Store};
use crate::telemetry::metrics::coordinator as metrics;
use crate::telemetry::trace_context::follow;
use crate::worker::actor::{send_command, send_to_node, WorkerInfo, WorkerLoad};
use crate::worker::protocol::{JobRef, NodeMessage, Placement, QueueReason, WorkerCommand};

/// Consumer group of the placement stream.
const GROUP: &str = "coordinator";
const TICK: Duration = Duration::from_millis(250);
/// How long a placement counts against a worker before its heartbeats must show the job.
const PLACED_GRACE: Duration = Duration::from_secs(2);
const REAP_EVERY: Duration = Duration::from_secs(10);
/// How long a prefix keeps its worker.
const AFFINITY_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct Settings {
    /// The leader lease; a standby takes over at most this long after the leader dies.
    pub lease: Duration,
    /// Silence after which a worker is declared dead.
    pub dead_after: Duration,
    /// Jobs one account may have in flight at once (0: no limit).
    pub max_jobs_per_account: usize,
    /// Place jobs on simulated workers too (load tests of the control plane); otherwise
    /// their heartbeats are ignored and they never get a job.
    pub allow_simulated: bool,
}

struct Tracked {
    info: WorkerInfo,
    load: WorkerLoad,
    seen: Instant,
    /// Jobs placed here that its heartbeats have not shown yet (each heartbeat drops the ones
    /// it holds or says it received).
    placed: HashMap<String, (Instant, JobRef)>,
}

impl Tracked {
    fn jobs(&self) -> impl Iterator<Item = &JobRef> {
        self.load
            .jobs
            .iter()
            .chain(self.placed.values().map(|(_, j)| j))
    }

    fn busy(&self) -> usize {
        self.load.busy() + self.placed.len()
    }

    /// Lower is less loaded: jobs held, then the share of the KV cache in use.
    fn score(&self) -> f64 {
        self.busy() as f64 + self.load.kv_used as f64 / self.info.kv_capacity.max(1) as f64
    }
}

struct Waiting {
    delivery: String,
    request: PlaceRequest,
    arrived: u64,
    told: Option<QueueReason>,
    /// Traced from arrival to dispatch, as the session's child.
    span: tracing::Span,
    since: Instant,
}

pub struct Coordinator {
    node_id: String,
    bus: Arc<dyn Bus>,
    state: ClusterState,
    store: Arc<dyn Store>,
    settings: Settings,
    leading: Arc<AtomicBool>,
    /// Set on taking the lease: the placement reader first claims what the last leader left.
    claim: Arc<AtomicBool>,
    workers: HashMap<String, Tracked>,
    queue: Vec<Waiting>,
    arrivals: u64,
    affinity: HashMap<(String, u64), (String, Instant)>,
    /// When Redis last failed us: silence since then is not a worker's fault.
    trouble: Option<Instant>,
    /// Simulated workers ignored (simulation not allowed), each logged once.
    ignored: HashSet<String>,
    last_reap: Instant,
}

impl Coordinator {
    pub fn new(
        node_id: String,
        bus: Arc<dyn Bus>,
        state: ClusterState,
        store: Arc<dyn Store>,
        settings: Settings,
    ) -> Self {
        Self {
            node_id,
            bus,
            state,
            store,
            settings,
            leading: Arc::new(AtomicBool::new(false)),
            claim: Arc::new(AtomicBool::new(false)),
            workers: HashMap::new(),
            queue: Vec::new(),
            arrivals: 0,
            affinity: HashMap::new(),
            trouble: None,
            ignored: HashSet::new(),
            last_reap: Instant::now(),
        }
    }
}

impl Actor for Coordinator {
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
                let env = d.envelope;
                let Some(me) = me.upgrade() else {
                    return ControlFlow::Break(());
                };
                match env.payload::<Heartbeat>() {
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
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
    }
}

/// Reads placement requests while this coordinator leads.
async fn read_requests(
    me: Addr<Coordinator>,
    bus: Arc<dyn Bus>,
    node: String,
    leading: Arc<AtomicBool>,
    claim: Arc<AtomicBool>,
) {
    let stream = streams::coordinator();
    loop {
        if !leading.load(Ordering::SeqCst) {
            tokio::time::sleep(TICK).await;
            continue;
        }
        let batch = if claim.swap(false, Ordering::SeqCst) {
            bus.claim_stale(&stream, GROUP, &node, Duration::ZERO, 10_000)
                .await
        } else {
            bus.consume(
                &stream,
                GROUP,
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
                            let _ = bus.ack(&stream, GROUP, &[d.id]).await;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!("reading placement requests: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Beat(Heartbeat);

impl Handler<Beat> for Coordinator {
    type Result = ();

    fn handle(&mut self, Beat(hb): Beat, _: &mut Context<Self>) {
        let age = Duration::from_millis(unix_ms().saturating_sub(hb.sent_at_ms));
        if age > self.settings.dead_after {
            return;
        }
        let id = hb.info.worker_id.clone();
        if hb.info.simulated && !self.settings.allow_simulated {
            if self.ignored.insert(id.clone()) {
                tracing::warn!(worker = %id, "ignoring a simulated worker: this coordinator was not started with --allow-simulated");
            }
            return;
        }
        if hb.leaving {
            if self.workers.remove(&id).is_some() {
                tracing::info!(worker = %id, "worker left");
            }
            return;
        }
        let now = Instant::now();
        match self.workers.get_mut(&id) {
            Some(w) => {
                w.placed.retain(|job, (at, _)| {
                    now.duration_since(*at) < PLACED_GRACE
                        && !hb.received.contains(job)
                        && !hb.load.jobs.iter().any(|j| &j.job_id == job)
                });
                (w.info, w.load, w.seen) = (hb.info, hb.load, now);
            }
            None => {
                tracing::info!(worker = %id, model = %hb.info.model_id, capacity = hb.load.capacity, "worker joined");
                self.workers.insert(
                    id,
                    Tracked {
                        info: hb.info,
                        load: hb.load,
                        seen: now,
                        placed: HashMap::new(),
                    },
                );
            }
        }
    }
}

/// The workers this coordinator knows, with their loads (for its `/metrics`).
#[derive(Message)]
#[rtype(result = "Vec<(WorkerInfo, WorkerLoad)>")]
pub struct PoolSnapshot;

impl Handler<PoolSnapshot> for Coordinator {
    type Result = actix::MessageResult<PoolSnapshot>;

    fn handle(&mut self, _: PoolSnapshot, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(self.pool())
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

impl Handler<Request> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: Request, _: &mut Context<Self>) {
        if !self.leading.load(Ordering::SeqCst) {
            // Left pending: the next leader claims it.
            return;
        }
        match msg.command {
            CoordinatorCommand::Place(request) => {
                if self.queue.iter().any(|w| {
                    w.request.job.job_id == request.job.job_id
                        && w.request.job.attempt >= request.job.attempt
                }) {
                    return self.ack(vec![msg.delivery]);
                }
                self.arrivals += 1;
                let span = tracing::info_span!("coordinator.queue", job = %request.job.job_id, attempt = request.job.attempt, model = %request.job.model, waited_for = tracing::field::Empty);
                follow(&span, msg.traceparent.as_deref());
                let waiting = Waiting {
                    delivery: msg.delivery,
                    request: *request,
                    arrived: self.arrivals,
                    told: None,
                    span,
                    since: Instant::now(),
                };
                if let Some(w) = self.try_place(waiting) {
                    self.queue.push(w);
                }
                metrics().queue_depth.set(self.queue.len() as i64);
            }
            CoordinatorCommand::Withdraw { job_id } => {
                let mut done = vec![msg.delivery];
                self.queue.retain(|w| {
                    let keep = w.request.job.job_id != job_id;
                    if !keep {
                        done.push(w.delivery.clone());
                        metrics().placements.with_label_values(&["withdrawn"]).inc();
                    }
                    keep
                });
                metrics().queue_depth.set(self.queue.len() as i64);
                self.ack(done);
            }
        }
    }
}

impl Coordinator {
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let (state, node, lease) = (
            self.state.clone(),
            self.node_id.clone(),
            self.settings.lease,
        );
        ctx.spawn(
            async move { state.lead(&node, lease).await }
                .into_actor(self)
                .map(|r, act, _| act.leadership(r)),
        );
        if !self.leading.load(Ordering::SeqCst) {
            return;
        }
        self.bury_the_dead();
        // Expired prefixes go here, once a tick: pruning on every placement made each one
        // walk every prefix seen in the last AFFINITY_TTL.
        self.affinity
            .retain(|_, (_, at)| at.elapsed() < AFFINITY_TTL);
        let waiting = std::mem::take(&mut self.queue);
        let mut order: Vec<_> = waiting
            .into_iter()
            .map(|w| {
                (
                    w.request.priority,
                    self.in_flight(&w.request.job.account_id),
                    w,
                )
            })
            .collect();
        order.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then(a.1.cmp(&b.1))
                .then(a.2.arrived.cmp(&b.2.arrived))
        });
        for (_, _, w) in order {
            if let Some(w) = self.try_place(w) {
                self.queue.push(w);
            }
        }
        metrics().queue_depth.set(self.queue.len() as i64);
        let view = PoolView {
            workers: self.pool(),
        };
        let state = self.state.clone();
        let ttl = self.settings.lease;
        actix::spawn(async move {
            if let Err(e) = state.put_pool(&view, ttl).await {
                tracing::warn!("publishing the pool view: {e}");
            }
        });
        if self.last_reap.elapsed() >= REAP_EVERY {
            self.last_reap = Instant::now();
            let store = Arc::clone(&self.store);
            actix::spawn(async move {
                match tokio::task::spawn_blocking(move || reap_expired(store.as_ref())).await {
                    Ok(Err(e)) => tracing::warn!("reaping expired holds: {e}"),
                    Err(e) => tracing::warn!("reaping expired holds: {e}"),
                    Ok(Ok(n)) => metrics().holds_reaped.inc_by(n as u64),
                }
            });
        }
    }

    fn leadership(&mut self, r: Result<bool, super::state::StateError>) {
        match r {
            Ok(true) if !self.leading.swap(true, Ordering::SeqCst) => {
                metrics().leader.set(1);
                tracing::info!(node = %self.node_id, workers = self.workers.len(), "leading the cluster");
                self.claim.store(true, Ordering::SeqCst);
            }
            Ok(false) if self.leading.swap(false, Ordering::SeqCst) => {
                metrics().leader.set(0);
                tracing::warn!(node = %self.node_id, "lost the leader lease; standing by");
                // What waits stays pending in Redis for the next leader.
                self.queue.clear();
            }
            Ok(_) => {}
            Err(e) => {
                self.trouble = Some(Instant::now());
                tracing::warn!("renewing the leader lease: {e}");
            }
        }
    }

    /// Declares silent workers dead and tells the sessions of their jobs.
    fn bury_the_dead(&mut self) {
        let now = Instant::now();
        let since = |seen: Instant| self.trouble.map_or(seen, |t| t.max(seen));
        let dead: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| now.duration_since(since(w.seen)) > self.settings.dead_after)
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            let Some(w) = self.workers.remove(&id) else {
                continue;
            };
            let jobs: Vec<JobRef> = w.jobs().cloned().collect();
            tracing::warn!(worker = %id, jobs = jobs.len(), "worker missed its heartbeats; declared dead");
            metrics().workers_dead.inc();
            metrics().jobs_lost.inc_by(jobs.len() as u64);
            for job in jobs {
                self.tell(
                    &job.reply_to,
                    &job.job_id,
                    NodeMessage::Lost {
                        attempt: job.attempt,
                        worker_id: id.clone(),
                    },
                );
            }
        }
    }

    /// Every live worker with its load, as heartbeats report them.
    fn pool(&self) -> Vec<(WorkerInfo, WorkerLoad)> {
        self.workers
            .values()
            .map(|w| (w.info.clone(), w.load.clone()))
            .collect()
    }

    fn in_flight(&self, account: &str) -> usize {
        self.workers
            .values()
            .flat_map(|w| w.jobs())
            .filter(|j| j.account_id == account)
            .count()
    }

    /// Places the job if a worker has room; otherwise hands it back to wait (telling its
    /// session why, once per reason).
    fn try_place(&mut self, w: Waiting) -> Option<Waiting> {
        let decision = Instant::now();
        let waiting = self.decide(w);
        metrics().decision.observe(decision.elapsed().as_secs_f64());
        waiting
    }

    fn decide(&mut self, mut w: Waiting) -> Option<Waiting> {
        let job = &w.request.job;
        let serving: Vec<&Tracked> = self
            .workers
            .values()
            .filter(|t| {
                t.info.model_id == job.model
                    && !t.load.draining
                    && !w.request.exclude.contains(&t.info.worker_id)
            })
            .collect();
        let reason = if serving.is_empty() {
            if job.attempt == 0 {
                let reason = format!("no live worker serves model `{}`", job.model);
                let refusal = NodeMessage::Placement {
                    attempt: job.attempt,
                    placement: Placement::Refused {
                        busy: false,
                        reason,
                    },
                };
                let _in_trace = w.span.enter();
                self.tell(&job.reply_to, &job.job_id, refusal);
                metrics().placements.with_label_values(&["refused"]).inc();
                self.ack(vec![w.delivery.clone()]);
                return None;
            }
            QueueReason::NoWorkers
        } else if self.settings.max_jobs_per_account > 0
            && self.in_flight(&job.account_id) >= self.settings.max_jobs_per_account
        {
            QueueReason::ConcurrencyLimit
        } else {
            let free: Vec<&Tracked> = serving
                .into_iter()
                .filter(|t| t.busy() < t.load.capacity)
                .collect();
            match self.choose(&free, &job.model, w.request.prefix) {
                Some(worker) => {
                    self.dispatch(w, worker);
                    return None;
                }
                None => QueueReason::Queued,
            }
        };
        if w.told != Some(reason) {
            w.told = Some(reason);
            w.span.record("waited_for", reason.as_str());
            let _in_trace = w.span.enter();
            self.tell(
                &job.reply_to,
                &job.job_id,
                NodeMessage::Placement {
                    attempt: job.attempt,
                    placement: Placement::Waiting(reason),
                },
            );
        }
        Some(w)
    }

    /// The least loaded worker, or the prefix's recent worker if it is nearly as idle.
    fn choose(&self, free: &[&Tracked], model: &str, prefix: u64) -> Option<String> {
        let best = free.iter().min_by(|a, b| a.score().total_cmp(&b.score()))?;
        let recent = self
            .affinity
            .get(&(model.to_string(), prefix))
            .filter(|(_, at)| at.elapsed() < AFFINITY_TTL);
        let warm = recent
            .and_then(|(id, _)| free.iter().find(|t| &t.info.worker_id == id))
            .filter(|t| t.busy() <= best.busy() + 1);
        Some(warm.unwrap_or(best).info.worker_id.clone())
    }

    fn dispatch(&mut self, w: Waiting, worker_id: String) {
        let m = metrics();
        m.placement.observe(w.since.elapsed().as_secs_f64());
        m.placements.with_label_values(&["placed"]).inc();
        let job = w.request.job;
        let job_ref = job.job_ref();
        if let Some(t) = self.workers.get_mut(&worker_id) {
            t.placed
                .insert(job.job_id.clone(), (Instant::now(), job_ref));
        }
        self.affinity.insert(
            (job.model.clone(), w.request.prefix),
            (worker_id.clone(), Instant::now()),
        );
        tracing::debug!(job = %job.job_id, attempt = job.attempt, worker = %worker_id, "placed");
        let (bus, node, stream, delivery) = (
            Arc::clone(&self.bus),
            self.node_id.clone(),
            streams::coordinator(),
            w.delivery,
        );
        let span = tracing::info_span!(parent: &w.span, "coordinator.place", worker = %worker_id);
        let dispatch = async move {
            let (job_id, attempt, reply_to) =
                (job.job_id.clone(), job.attempt, job.reply_to.clone());
            let placement = match send_command(
                bus.as_ref(),
                &node,
                &worker_id,
                &job_id,
                &WorkerCommand::Run(Box::new(job)),
            )
            .await
            {
                Ok(()) => Placement::Placed { worker_id },
                Err(e) => Placement::Refused {
                    busy: false,
                    reason: format!("the bus: {e}"),
                },
            };
            send_to_node(
                bus.as_ref(),
                &node,
                &reply_to,
                &job_id,
                NodeMessage::Placement { attempt, placement },
            )
            .await;
            if let Err(e) = bus.ack(&stream, GROUP, &[delivery]).await {
                tracing::warn!("acknowledging a placement: {e}");
            }
        };
        actix::spawn(dispatch.instrument(span));
    }

    /// Sends `message` to a session, in the trace of the span the caller is in.
    fn tell(&self, stream: &str, job_id: &str, message: NodeMessage) {
        let (bus, node, stream, job_id) = (
            Arc::clone(&self.bus),
            self.node_id.clone(),
            stream.to_string(),
            job_id.to_string(),
        );
        actix::spawn(
            async move { send_to_node(bus.as_ref(), &node, &stream, &job_id, message).await }
                .in_current_span(),
        );
    }

    fn ack(&self, ids: Vec<String>) {
        let bus = Arc::clone(&self.bus);
        actix::spawn(async move {
            if let Err(e) = bus.ack(&streams::coordinator(), GROUP, &ids).await {
                tracing::warn!("acknowledging placement requests: {e}");
            }
        });
    }
}
