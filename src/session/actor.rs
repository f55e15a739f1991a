//! The SessionActor: one chat request's turn, from validated request to settled bill.
//!
//! Given the prompt the front prepared, it has the account's billing hold the worst case,
//! asks the coordinator for a worker, and relays the worker's events to the front as
//! [`SessionEvent`]s. When the job ends it settles the exact usage and releases the rest
//! of the hold. If the client goes away the job is withdrawn from the queue or cancelled on
//! its worker at once, and the session still waits for the worker's final count so that
//! only the tokens produced are billed.
//!
//! A job whose worker dies moves (failover): the coordinator reports the attempt lost, and
//! the session places the next attempt with the prompt, the tokens produced so far and how
//! much text the client has, so the new worker continues the same generation and the client
//! sees one uninterrupted stream. Events of an earlier attempt are ignored from then on. The
//! hold is renewed while the turn lives and settled once, for the last attempt's count.
//!
//! A job's images are stored on the bus once, before the hold, and each attempt's placement
//! names them ([`protocol::images`]); they live as long as the turn.
//!
//! The file reads in the order of a request's life: the messages, the state ([`Phase`]),
//! then the handlers from admission to settlement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, WrapFuture};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tracing::Instrument;

use super::inbox::{Arrival, JobUpdate, NodeInbox};
use super::markup::Markup;
use super::models::ModelEntry;
use super::prompt::PreparedPrompt;
use super::{placement, refusal, Services};
use crate::api::chat_request::{ChatRequest, TokenChoice};
use crate::api::chat_response::{finish_reason, logprob_entry, Delta, Usage};
use crate::api::error::ApiError;
use crate::billing::accounts::{BillingError, HoldJob, Presented, SettleJob};
use crate::billing::limits::Permit;
use crate::engine::generate::{FinishReason, TokenLogprob, ENDING_ALLOWANCE};
use crate::ids::random_hex;
use crate::protocol::images::JobImages;
use crate::protocol::{
    self, JobParams, JobSpec, NodeMessage, Placement, Progress, QueueReason, WorkerCommand,
    WorkerEvent,
};
use crate::store::Hold;
use crate::telemetry::metrics::{front as metrics, GaugeGuard, ModelMetrics};

/// How long a job may wait for a worker before the request gives up.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a live turn renews its hold's lease.
const RENEW_EVERY: Duration = Duration::from_secs(30);

// ---- Messages ----------------------------------------------------------------------------

/// One request admitted by the front.
#[derive(Clone)]
pub struct Turn {
    pub job_id: String,
    pub key: Presented,
    pub model: Arc<ModelEntry>,
    pub request: ChatRequest,
    /// Held for the whole turn: the key's concurrency count (one for all of a request's
    /// choices).
    pub permit: Arc<Permit>,
    /// Whether this turn pays for the prompt: a request's choices share one prompt, billed
    /// once, as OpenAI bills `n`.
    pub bills_prompt: bool,
    /// The request's trace span; the turn's own spans are its children, and messages to the
    /// coordinator and workers carry it.
    pub span: tracing::Span,
    /// When the front received the request.
    pub arrived: Instant,
}

/// What the front hears from a session, in order: `Started` (a worker took the job) then
/// pieces of the message and `Done`, or an `Error` at any point.
#[derive(Debug)]
pub enum SessionEvent {
    Started,
    /// A piece of the message, and when the worker's event that brought it reached this node.
    Delta(Delta, Arrival),
    /// `tool_calls`: the message made calls (so a natural end is `finish_reason: "tool_calls"`).
    Done {
        finish: FinishReason,
        tool_calls: bool,
        usage: Usage,
    },
    Error(ApiError),
    /// A hosted call's progress (from the tool loop).
    ToolProgress(crate::tools::results::ToolProgress),
    /// What the request's hosted calls produced, just before `Done` (from the tool loop).
    Hosted(Box<crate::tools::results::HostedOutcome>),
}

// ---- State -------------------------------------------------------------------------------

/// Where the turn stands. Each phase holds what it needs, so what is legal is what the
/// types allow.
enum Phase {
    /// The prompt is ready; the hold is being asked for.
    Admitted(Box<PreparedPrompt>),
    /// The hold is in and the job waits for a worker (being placed, or queued).
    Held {
        job: Held,
        /// The last reason the coordinator gave for the wait, for the timeout's message.
        waiting: Option<QueueReason>,
    },
    /// A worker was given the job and has not taken it yet.
    Placed { job: Held, worker_id: String },
    /// The worker took the job; its tokens stream.
    Streaming { job: Held, worker_id: String },
    /// The bill is being settled (or the hold released); then the session stops.
    Finishing,
}

/// A job with its hold in place, as last placed (its attempt is the current one).
struct Held {
    hold: Hold,
    spec: JobSpec,
}

pub struct SessionActor {
    services: Arc<Services>,
    turn: Turn,
    phase: Phase,
    out: UnboundedSender<SessionEvent>,
    /// Tokens the client has (the text of), and how many bytes of text: where a failover
    /// resumes.
    produced: Progress,
    /// Workers that lost an attempt of this job.
    lost: Vec<String>,
    client_gone: bool,
    /// Reads the output into content, reasoning and tool calls.
    markup: Option<Markup>,
    /// The model's request metrics.
    metrics: ModelMetrics,
    /// Counts the turn in `requests_in_flight` as waiting, then running.
    in_flight: GaugeGuard,
    /// When the hold was in place and the job went to be placed, until a worker took it.
    dispatched: Option<Instant>,
    /// When the last token arrived.
    last_token: Option<Instant>,
    /// The inbox of this session's thread, once the session is in it.
    inbox: Option<Arc<NodeInbox>>,
    /// The job's images, stored on the bus for its attempts (none without images).
    images: Option<Arc<JobImages>>,
}

/// Why the turn could not start.
enum HoldFailed {
    Images(crate::bus::BusError),
    Billing(BillingError),
}

// ---- Admission: the hold -----------------------------------------------------------------

impl SessionActor {
    /// Starts the turn; its events arrive on the returned receiver, and dropping the
    /// receiver cancels the turn.
    pub fn start_turn(
        services: Arc<Services>,
        turn: Turn,
        prompt: PreparedPrompt,
    ) -> UnboundedReceiver<SessionEvent> {
        let (out, rx) = unbounded_channel();
        let metrics = metrics().model(&turn.model.id);
        let in_flight = GaugeGuard::new(metrics.waiting.clone());
        SessionActor {
            services,
            turn,
            phase: Phase::Admitted(Box::new(prompt)),
            out,
            produced: Progress::default(),
            lost: Vec::new(),
            client_gone: false,
            markup: None,
            metrics,
            in_flight,
            dispatched: None,
            last_token: None,
            inbox: None,
            images: None,
        }
        .start();
        rx
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let out = self.out.clone();
        ctx.spawn(
            async move { out.closed().await }
                .into_actor(self)
                .map(|(), act, _| {
                    act.client_gone = true;
                    act.stop_the_job();
                }),
        );
        let Phase::Admitted(prepared) = std::mem::replace(&mut self.phase, Phase::Finishing) else {
            return;
        };
        self.hold(*prepared, ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(inbox) = &self.inbox {
            inbox.unsubscribe(&self.turn.job_id);
        }
        if let Some(images) = self.images.take() {
            let bus = Arc::clone(&self.services.bus);
            actix::spawn(async move { images.drop_all(bus.as_ref()).await });
        }
    }
}

impl SessionActor {
    /// Step 1: store the images, hold the worst case (with the first placement request,
    /// where the store can write it), then dispatch.
    fn hold(&mut self, prepared: PreparedPrompt, ctx: &mut Context<Self>) {
        let inbox = self.services.inboxes.here();
        self.markup = Some(Markup::new(
            prepared.tools,
            prepared.thinking,
            Box::new(call_id),
        ));
        // A constrained output may run a little past `max_tokens` to end validly.
        let allowance = if prepared.params.grammar.is_some() {
            ENDING_ALLOWANCE as u64
        } else {
            0
        };
        let (prompt_tokens, max_tokens) = (
            self.billed_prompt(prepared.prompt_ids.len() as u64),
            prepared.params.max_tokens as u64 + allowance,
        );
        let (images, refs) = JobImages::new(&self.turn.job_id, prepared.images);
        let images = (!refs.is_empty()).then(|| Arc::new(images));
        self.images = images.clone();
        let spec = JobSpec {
            job_id: self.turn.job_id.clone(),
            attempt: 0,
            account_id: self.turn.key.record.account_id.clone(),
            model: self.turn.model.id.clone(),
            prompt: prepared.prompt_ids,
            params: JobParams::from(&prepared.params),
            resume: Progress::default(),
            reply_to: inbox.stream().to_string(),
            media: None,
            images: refs,
        };
        let priority = self.turn.model.tier.priority;
        let then = match self
            .turn
            .span
            .in_scope(|| placement::outbox(&self.services, &spec, priority))
        {
            Ok(then) => then,
            Err(e) => return self.fail(e, ctx),
        };
        let placed = then.is_some();
        // Before the hold: with `then`, the answer to the placement can come before the
        // hold's own reply. From now on every answer finds the session.
        inbox.subscribe(&self.turn.job_id, ctx.address().recipient());
        self.inbox = Some(inbox);
        let choice = self.turn.request.token_type.unwrap_or(TokenChoice::Auto);
        let hold = HoldJob {
            job_id: self.turn.job_id.clone(),
            account_id: self.turn.key.record.account_id.clone(),
            choice,
            price: self.turn.model.tier.price(),
            prompt_tokens,
            max_tokens,
            key: self.turn.key.proof.clone(),
            then,
        };
        let (billing, bus) = (
            Arc::clone(&self.services.billing),
            Arc::clone(&self.services.bus),
        );
        let span =
            tracing::info_span!(parent: &self.turn.span, "billing.hold", prompt_tokens, max_tokens);
        let stored = tracing::info_span!(parent: &self.turn.span, "images.store");
        let start = async move {
            if let Some(images) = images {
                let store = images.store(bus.as_ref()).instrument(stored);
                store.await.map_err(HoldFailed::Images)?;
            }
            billing
                .hold(hold)
                .instrument(span)
                .await
                .map_err(HoldFailed::Billing)
        };
        ctx.wait(start.into_actor(self).map(move |r, act, ctx| match r {
            Ok(hold) => {
                metrics().billing_holds.with_label_values(&["held"]).inc();
                act.dispatch(Held { hold, spec }, placed, ctx);
            }
            // Nothing was held or placed: the hold carries the placement request.
            Err(HoldFailed::Images(e)) => act.fail(ApiError::logged("storing the images", e), ctx),
            Err(HoldFailed::Billing(e)) => {
                if placed {
                    // The hold may have been written, and its placement request with
                    // it: take the request back (a hold written stays open until the
                    // reaper releases it).
                    act.withdraw();
                }
                let error = refusal::hold_refused(e, choice, prompt_tokens, max_tokens);
                act.fail(error, ctx)
            }
        }));
    }

    // ---- Placement ---------------------------------------------------------------------

    /// Step 2: the hold is in. Ask for a worker (unless the hold already did), and start
    /// the clocks: the queue timeout and the hold's renewal.
    fn dispatch(&mut self, job: Held, placed: bool, ctx: &mut Context<Self>) {
        self.dispatched = Some(Instant::now());
        if !placed && self.client_gone {
            self.phase = Phase::Held { job, waiting: None };
            return self.finish(0, 0, None, ctx);
        }
        if !placed {
            self.request_placement(&job, ctx);
        }
        self.phase = Phase::Held { job, waiting: None };
        if placed && self.client_gone {
            // The request is out: take it back from the queue.
            self.withdraw();
        }
        ctx.run_later(QUEUE_TIMEOUT, |act, ctx| {
            let why = match &act.phase {
                _ if act.last_token.is_some() => return,
                Phase::Held { waiting, .. } => waiting.map_or("no worker took it", |r| r.as_str()),
                Phase::Placed { .. } => "its worker did not take it",
                Phase::Admitted(_) | Phase::Streaming { .. } | Phase::Finishing => return,
            };
            let message = format!(
                "The request waited {}s for a worker ({why}); try again shortly",
                QUEUE_TIMEOUT.as_secs()
            );
            act.fail(ApiError::unavailable(message), ctx);
        });
        ctx.run_interval(RENEW_EVERY, |act, _| act.renew_hold());
    }

    /// Asks the coordinator to place the current attempt; the answer comes to the inbox.
    fn request_placement(&self, job: &Held, ctx: &mut Context<Self>) {
        let (s, spec, lost) = (
            Arc::clone(&self.services),
            job.spec.clone(),
            self.lost.clone(),
        );
        let priority = self.turn.model.tier.priority;
        let request = async move { placement::request(&s, spec, priority, lost).await }
            .instrument(self.turn.span.clone());
        ctx.spawn(request.into_actor(self).map(|r, act, ctx| {
            if let Err(e) = r {
                act.fail(e, ctx)
            }
        }));
    }

    /// The coordinator's answer.
    fn placed(&mut self, placement: Placement, ctx: &mut Context<Self>) {
        match placement {
            Placement::Placed { worker_id } => {
                // The worker may have taken the job (`Streaming`) before this came.
                if !matches!(self.phase, Phase::Held { .. }) {
                    return;
                }
                if let Some(job) = self.take_held() {
                    if self.client_gone {
                        self.cancel_on(worker_id.clone());
                    }
                    self.phase = Phase::Placed { job, worker_id };
                }
            }
            Placement::Waiting(reason) => {
                tracing::debug!(job = %self.turn.job_id, reason = reason.as_str(), "the job waits for a worker");
                if let Phase::Held { waiting, .. } = &mut self.phase {
                    *waiting = Some(reason);
                }
            }
            Placement::Refused { busy: true, reason } => {
                tracing::debug!(job = %self.turn.job_id, "placement refused: {reason}");
                let message = format!(
                    "The server is at capacity for model `{}`; retry shortly",
                    self.turn.model.id
                );
                self.fail(ApiError::rate_limited(message, 1), ctx)
            }
            Placement::Refused {
                busy: false,
                reason,
            } => {
                tracing::debug!(job = %self.turn.job_id, "placement refused: {reason}");
                let message = format!(
                    "No worker is serving model `{}` right now; try again shortly",
                    self.turn.model.id
                );
                self.fail(ApiError::unavailable(message), ctx)
            }
        }
    }

    /// The worker of the current attempt is gone: place the next attempt where it left off.
    fn fail_over(&mut self, worker_id: String, ctx: &mut Context<Self>) {
        let Some(mut job) = self.take_held() else {
            return;
        };
        let spec = &mut job.spec;
        tracing::warn!(job = %spec.job_id, attempt = spec.attempt, worker = %worker_id, produced = self.produced.tokens.len(), "the job's worker is gone; moving the job");
        spec.attempt += 1;
        spec.resume = self.produced.clone();
        metrics()
            .failovers
            .with_label_values(&[spec.model.as_str()])
            .inc();
        self.lost.push(worker_id);
        let prompt = spec.prompt.len() as u64;
        self.phase = Phase::Held { job, waiting: None };
        if self.client_gone {
            // Nobody is waiting for the rest: bill what the client got.
            let done = self.produced.tokens.len() as u64;
            return self.finish(prompt, done, None, ctx);
        }
        if let Phase::Held { job, .. } = &self.phase {
            self.request_placement(job, ctx);
        }
    }

    /// Takes the held job out of the phase, leaving `Finishing` for the caller to replace;
    /// before the hold or once finishing, none, and the phase stays.
    fn take_held(&mut self) -> Option<Held> {
        match std::mem::replace(&mut self.phase, Phase::Finishing) {
            Phase::Held { job, .. } | Phase::Placed { job, .. } | Phase::Streaming { job, .. } => {
                Some(job)
            }
            other => {
                self.phase = other;
                None
            }
        }
    }

    /// The job's attempt now, if it has one.
    fn attempt(&self) -> Option<u32> {
        match &self.phase {
            Phase::Held { job, .. } | Phase::Placed { job, .. } | Phase::Streaming { job, .. } => {
                Some(job.spec.attempt)
            }
            Phase::Admitted(_) | Phase::Finishing => None,
        }
    }
}

impl Handler<JobUpdate> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: JobUpdate, ctx: &mut Context<Self>) {
        let current = self.attempt();
        match msg.message {
            NodeMessage::Placement { attempt, placement } if Some(attempt) == current => {
                self.placed(placement, ctx)
            }
            NodeMessage::Lost { attempt, worker_id } if Some(attempt) == current => {
                self.fail_over(worker_id, ctx)
            }
            NodeMessage::Worker { attempt, event } if Some(attempt) == current => {
                self.worker_event(event, msg.arrival, ctx)
            }
            NodeMessage::Worker { event, .. } => {
                // A worker that was given up on (it hung) woke up: stop what it still runs.
                if matches!(
                    event,
                    WorkerEvent::Accepted { .. } | WorkerEvent::Text { .. }
                ) {
                    self.cancel_on(msg.sender);
                }
            }
            NodeMessage::Placement { .. } | NodeMessage::Lost { .. } => {}
        }
    }
}

// ---- Streaming ---------------------------------------------------------------------------

impl SessionActor {
    fn worker_event(&mut self, event: WorkerEvent, arrival: Arrival, ctx: &mut Context<Self>) {
        match event {
            WorkerEvent::Accepted { worker_id } => self.accepted(worker_id),
            WorkerEvent::Rejected { busy: true, .. } => self.fail(
                ApiError::rate_limited(
                    "The server is at capacity for this model; retry shortly",
                    1,
                ),
                ctx,
            ),
            WorkerEvent::Rejected {
                busy: false,
                reason,
            } => {
                tracing::warn!(job = %self.turn.job_id, "a worker refused the job: {reason}");
                self.fail(
                    ApiError::unavailable("No worker could take the request; try again shortly"),
                    ctx,
                )
            }
            WorkerEvent::Text {
                text,
                tokens,
                logprobs,
            } => {
                self.token_times(tokens.len());
                self.produced.tokens.extend(tokens);
                self.produced.text_bytes += text.len() as u64;
                if self.client_gone {
                    return;
                }
                let mut deltas = self
                    .markup
                    .as_mut()
                    .map(|m| m.push(&text))
                    .unwrap_or_default();
                if !logprobs.is_empty() {
                    let tok = &self.turn.model.tokenizer;
                    let entries = logprobs
                        .iter()
                        .map(|l| logprob_entry(tok, &TokenLogprob::from(l)))
                        .collect();
                    deltas.push(Delta::Logprobs(entries));
                }
                deltas
                    .into_iter()
                    .for_each(|d| self.emit(SessionEvent::Delta(d, arrival)));
                if self.client_gone {
                    self.stop_the_job();
                }
            }
            WorkerEvent::Finished {
                finish,
                prompt_tokens,
                completion_tokens,
            } => {
                let deltas = self.markup.as_mut().map(Markup::finish).unwrap_or_default();
                deltas
                    .into_iter()
                    .for_each(|d| self.emit(SessionEvent::Delta(d, arrival)));
                let tool_calls = self.markup.as_ref().is_some_and(Markup::made_calls);
                let finish = FinishReason::from(finish);
                self.count_finished(finish, tool_calls, prompt_tokens, completion_tokens);
                let done = SessionEvent::Done {
                    finish,
                    tool_calls,
                    usage: Usage {
                        prompt_tokens: prompt_tokens as usize,
                        completion_tokens: completion_tokens as usize,
                    },
                };
                self.finish(prompt_tokens, completion_tokens, Some(done), ctx);
            }
            WorkerEvent::Failed(reason) => {
                tracing::error!(job = %self.turn.job_id, "the engine failed the job: {reason}");
                self.fail(ApiError::internal(), ctx)
            }
            WorkerEvent::Media(_) => {
                tracing::error!(job = %self.turn.job_id, "a media event for a chat job");
                self.fail(ApiError::internal(), ctx)
            }
        }
    }

    /// The worker took the job: the turn runs (a failover's new worker continues it).
    fn accepted(&mut self, worker_id: String) {
        let Some(job) = self.take_held() else {
            return;
        };
        // The first worker to take the job starts the turn.
        if let Some(at) = self.dispatched.take() {
            self.metrics.queue_time.observe(at.elapsed().as_secs_f64());
            self.in_flight = GaugeGuard::new(self.metrics.running.clone());
            self.emit(SessionEvent::Started);
        }
        if self.client_gone {
            self.cancel_on(worker_id.clone());
        }
        self.phase = Phase::Streaming { job, worker_id };
    }

    fn emit(&mut self, event: SessionEvent) {
        if self.out.send(event).is_err() {
            self.client_gone = true;
        }
    }

    /// The client went away: withdraw the job from the queue, or stop it on its worker
    /// (whose final count still comes and is billed).
    fn stop_the_job(&mut self) {
        match &self.phase {
            Phase::Held { .. } => self.withdraw(),
            Phase::Placed { worker_id, .. } | Phase::Streaming { worker_id, .. } => {
                self.cancel_on(worker_id.clone())
            }
            // Not asked for yet (the hold's answer sees `client_gone`), or already settling.
            Phase::Admitted(_) | Phase::Finishing => {}
        }
    }

    /// Asks the worker to stop the job; its final event still comes, with what it produced.
    fn cancel_on(&self, worker: String) {
        let (s, job_id) = (Arc::clone(&self.services), self.turn.job_id.clone());
        let cancel = async move {
            let command = WorkerCommand::Cancel {
                job_id: job_id.clone(),
            };
            if let Err(e) =
                protocol::to_worker(s.bus.as_ref(), &s.node_id, &worker, &job_id, &command).await
            {
                tracing::error!(job = %job_id, "sending a cancel: {e}");
            }
        };
        actix::spawn(cancel.instrument(self.turn.span.clone()));
    }

    /// Takes a job that waits for a worker out of the coordinator's queue.
    fn withdraw(&self) {
        let (s, job_id) = (Arc::clone(&self.services), self.turn.job_id.clone());
        actix::spawn(async move { placement::withdraw(&s, &job_id).await });
    }

    /// Renews the hold's lease, and the stored images' with it.
    fn renew_hold(&self) {
        let (billing, job_id) = (Arc::clone(&self.services.billing), self.turn.job_id.clone());
        let (bus, images) = (Arc::clone(&self.services.bus), self.images.clone());
        actix::spawn(async move {
            if let Err(e) = billing.renew_hold(&job_id).await {
                tracing::warn!(job = %job_id, "renewing the hold: {e}");
            }
            if let Some(images) = images {
                if let Err(e) = images.keep(bus.as_ref()).await {
                    tracing::warn!(job = %job_id, "keeping the job's images: {e}");
                }
            }
        });
    }

    // ---- The end: settlement -------------------------------------------------------------

    /// Ends the turn with an error once the hold (if any) is released, so a client that
    /// sees the error sees its balance whole again.
    fn fail(&mut self, error: ApiError, ctx: &mut Context<Self>) {
        if let Phase::Held { .. } = self.phase {
            self.withdraw();
        }
        self.finish(0, 0, Some(SessionEvent::Error(error)), ctx);
    }

    /// Settles the hold (if any) for the given usage, then sends `then` and stops. A store
    /// that cannot be reached is retried for a while: the usage is known, and billing it
    /// exactly once matters more than answering at once.
    fn finish(
        &mut self,
        prompt_tokens: u64,
        completion_tokens: u64,
        then: Option<SessionEvent>,
        ctx: &mut Context<Self>,
    ) {
        let (hold, worker_id) = match std::mem::replace(&mut self.phase, Phase::Finishing) {
            Phase::Held { job, .. } => (job.hold, None),
            Phase::Placed { job, worker_id } | Phase::Streaming { job, worker_id } => {
                (job.hold, Some(worker_id))
            }
            Phase::Admitted(_) | Phase::Finishing => {
                if let Some(e) = then {
                    self.emit(e);
                }
                ctx.stop();
                return;
            }
        };
        let billing = Arc::clone(&self.services.billing);
        let account = self.turn.key.record.account_id.clone();
        let job = SettleJob {
            job_id: self.turn.job_id.clone(),
            price: self.turn.model.tier.price(),
            prompt_tokens: self.billed_prompt(prompt_tokens),
            completion_tokens,
            worker_id,
            hold: Some(hold),
        };
        let span = tracing::info_span!(parent: &self.turn.span, "billing.settle", prompt_tokens, completion_tokens);
        let settle = async move { billing.settle_retrying(&account, job).await };
        ctx.wait(settle.instrument(span).into_actor(self).map(move |r, act, ctx| {
            let outcome = if let Err(e) = r {
                tracing::error!(job = %act.turn.job_id, "settling the hold failed; it stays open until the reaper releases it: {e}");
                "failed"
            } else {
                "settled"
            };
            metrics().billing_settles.with_label_values(&[outcome]).inc();
            if let Some(e) = then {
                act.emit(e);
            }
            ctx.stop();
        }));
    }

    /// The prompt tokens this turn pays for.
    fn billed_prompt(&self, prompt_tokens: u64) -> u64 {
        if self.turn.bills_prompt {
            prompt_tokens
        } else {
            0
        }
    }

    /// Time to the first token, then the gaps between tokens (a piece of text that brings
    /// several tokens spreads its gap over them).
    fn token_times(&mut self, tokens: usize) {
        if tokens == 0 {
            return;
        }
        let now = Instant::now();
        match self.last_token {
            None => self
                .metrics
                .time_to_first_token
                .observe(now.duration_since(self.turn.arrived).as_secs_f64()),
            Some(last) => {
                let gap = now.duration_since(last).as_secs_f64() / tokens as f64;
                (0..tokens).for_each(|_| self.metrics.inter_token_latency.observe(gap));
            }
        }
        self.last_token = Some(now);
    }

    fn count_finished(
        &self,
        finish: FinishReason,
        tool_calls: bool,
        prompt_tokens: u64,
        completion_tokens: u64,
    ) {
        self.metrics
            .e2e_latency
            .observe(self.turn.arrived.elapsed().as_secs_f64());
        self.metrics.prompt_tokens.inc_by(prompt_tokens);
        self.metrics.generation_tokens.inc_by(completion_tokens);
        let reason = if finish == FinishReason::Cancelled {
            "abort"
        } else {
            finish_reason(finish, tool_calls)
        };
        metrics()
            .request_success
            .with_label_values(&[self.turn.model.id.as_str(), reason])
            .inc();
    }
}

/// A fresh tool call id (`call_` and 24 hex digits, OpenAI's length).
fn call_id() -> String {
    match random_hex(12) {
        Ok(hex) => format!("call_{hex}"),
        Err(e) => {
            // Ids only need to be unique within the message; the clock will do.
            tracing::warn!("no randomness for a call id: {e}");
            format!("call_{:024x}", crate::clock::unix_nanos())
        }
    }
}
