//! The SessionActor: one chat request's turn, from validated request to settled bill.
//!
//! Given the prompt the front prepared, it has the account's billing hold the
//! worst case, has the pool place the job on a worker and relays the worker's events to the
//! front as [`SessionEvent`]s. When the job ends it settles the exact usage and releases the
//! rest of the hold. If the client goes away the job is cancelled at once, and the session
//! still waits for the worker's final count so that only the tokens produced are billed.
//!
//! A job whose worker dies moves (failover): the coordinator reports the attempt lost, and
//! the session places the next attempt with the prompt, the tokens produced so far and how
//! much text the client has, so the new worker continues the same generation and the client
//! sees one uninterrupted stream. Events of an earlier attempt are ignored from then on. The
//! hold is renewed while the turn lives and settled once, for the last attempt's count.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, WrapFuture};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tracing::Instrument;

use super::inbox::{Arrival, JobUpdate, NodeInbox, NodeInboxes};
use super::markup::Markup;
use super::models::{ModelCatalog, ModelEntry};
use super::pool::Pool;
use super::prepare_pool::PreparePool;
use super::prompt::PreparedPrompt;
use crate::api::chat_request::{ChatRequest, TokenChoice};
use crate::api::chat_response::{finish_reason, logprob_entry, Delta, Usage};
use crate::api::error::ApiError;
use crate::billing::accounts::{Billing, BillingError, HoldJob, Presented, SettleJob};
use crate::billing::limits::Permit;
use crate::bus::Bus;
use crate::config::Config;
use crate::engine::generate::{FinishReason, Resume};
use crate::ids::random_hex;
use crate::store::{Hold, StoreError};
use crate::telemetry::metrics::{front as metrics, GaugeGuard, ModelMetrics};
use crate::worker::actor::send_command;
use crate::worker::engine_thread::JobEvent;
use crate::worker::protocol::{
    JobSpec, NodeMessage, Placement, QueueReason, WorkerCommand, WorkerEvent,
};

/// How long a job may wait for a worker before the request gives up.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a live turn renews its hold's lease.
const RENEW_EVERY: Duration = Duration::from_secs(30);
/// Tries of a settlement the store could not take (Redis restarting), about a minute in all.
const SETTLE_TRIES: u32 = 40;

/// What every session of this node shares.
pub struct Services {
    pub node_id: String,
    pub bus: Arc<dyn Bus>,
    pub billing: Arc<Billing>,
    pub pool: Pool,
    /// Route workers' and the coordinator's answers to this node's sessions, one stream per
    /// thread.
    pub inboxes: NodeInboxes,
    pub models: Arc<ModelCatalog>,
    pub config: Config,
    /// Where request bodies are parsed and prompts prepared.
    pub preparer: PreparePool,
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
}

/// One request admitted by the front.
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

pub struct SessionActor {
    services: Arc<Services>,
    turn: Turn,
    /// The prompt as the front prepared it, until the hold is asked for.
    prompt: Option<PreparedPrompt>,
    out: UnboundedSender<SessionEvent>,
    /// The job as last placed (its attempt is the current one); set once the hold is in.
    job: Option<JobSpec>,
    /// The hold in place, not yet settled.
    held: Option<Hold>,
    /// The worker running the current attempt, once known.
    worker_id: Option<String>,
    /// Workers that lost an attempt of this job.
    lost: Vec<String>,
    /// Tokens the client has (the text of), and how many bytes of text.
    produced: Resume,
    started: bool,
    /// The last reason the job waited for, for the timeout's message.
    waiting: Option<QueueReason>,
    client_gone: bool,
    /// Reads the output into content, reasoning and tool calls; set once the prompt is ready.
    markup: Option<Markup>,
    /// The model's request metrics.
    metrics: ModelMetrics,
    /// Counts the turn in `requests_in_flight` as waiting, then running.
    in_flight: GaugeGuard,
    /// When the hold was in place and the job went to be placed.
    dispatched: Option<Instant>,
    /// When the last token arrived.
    last_token: Option<Instant>,
    /// The inbox of this session's thread, once the session is in it.
    inbox: Option<Arc<NodeInbox>>,
}

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
        let fresh = SessionActor {
            services,
            turn,
            prompt: Some(prompt),
            out,
            job: None,
            held: None,
            worker_id: None,
            lost: Vec::new(),
            produced: Resume::default(),
            started: false,
            waiting: None,
            client_gone: false,
            markup: None,
            metrics,
            in_flight,
            dispatched: None,
            last_token: None,
            inbox: None,
        };
        fresh.start();
        rx
    }

    /// The prompt tokens this turn pays for.
    fn billed_prompt(&self, prompt_tokens: usize) -> usize {
        if self.turn.bills_prompt {
            prompt_tokens
        } else {
            0
        }
    }

    fn emit(&mut self, event: SessionEvent) {
        if self.out.send(event).is_err() {
            self.client_gone = true;
        }
    }

    /// Ends the turn with an error once the hold (if any) is released, so a client that
    /// sees the error sees its balance whole again.
    fn fail(&mut self, error: ApiError, ctx: &mut Context<Self>) {
        self.withdraw();
        self.finish(0, 0, Some(SessionEvent::Error(error)), ctx);
    }

    /// Settles the hold (if any) for the given usage, then sends `then` and stops. A store
    /// that cannot be reached is retried for a while: the usage is known, and billing it
    /// exactly once matters more than answering at once.
    fn finish(
        &mut self,
        prompt_tokens: usize,
        completion_tokens: usize,
        then: Option<SessionEvent>,
        ctx: &mut Context<Self>,
    ) {
        let Some(hold) = self.held.take() else {
            if let Some(e) = then {
                self.emit(e);
            }
            ctx.stop();
            return;
        };
        let billing = Arc::clone(&self.services.billing);
        let account = self.turn.key.record.account_id.clone();
        let job = SettleJob {
            job_id: self.turn.job_id.clone(),
            price: self.turn.model.tier.price(),
            prompt_tokens: self.billed_prompt(prompt_tokens) as u64,
            completion_tokens: completion_tokens as u64,
            worker_id: self.worker_id.clone(),
            hold: Some(hold),
        };
        let span = tracing::info_span!(parent: &self.turn.span, "billing.settle", prompt_tokens, completion_tokens);
        let settle = async move {
            let mut tries = 0;
            loop {
                match billing.settle(&account, job.clone()).await {
                    Err(BillingError::Store(StoreError::Backend(e))) if tries < SETTLE_TRIES => {
                        tracing::warn!(job = %job.job_id, "settling failed, retrying: {e}");
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(250 * u64::from(tries.min(8))))
                            .await;
                    }
                    r => return r,
                }
            }
        };
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

    /// The hold is in place: place the first attempt, unless the hold already wrote its
    /// placement request (`placed`).
    fn dispatch(&mut self, job: JobSpec, placed: bool, ctx: &mut Context<Self>) {
        if !placed && self.client_gone {
            return self.finish(0, 0, None, ctx);
        }
        self.job = Some(job);
        self.dispatched = Some(Instant::now());
        if !placed {
            self.place(ctx);
        } else if self.client_gone {
            // The request is out: take it back from the queue, or stop it on its worker once
            // the placement is known.
            self.cancel();
        }
        ctx.run_later(QUEUE_TIMEOUT, |act, ctx| {
            if !act.started {
                let why = act.waiting.map_or("no worker took it", |r| r.as_str());
                act.fail(
                    ApiError::unavailable(format!(
                        "The request waited {}s for a worker ({why}); try again shortly",
                        QUEUE_TIMEOUT.as_secs()
                    )),
                    ctx,
                );
            }
        });
        ctx.run_interval(RENEW_EVERY, |act, _| act.renew_hold());
    }

    /// Asks the pool to place the current attempt; the answer comes as a [`Placement`].
    fn place(&mut self, ctx: &mut Context<Self>) {
        let Some(job) = self.job.clone() else { return };
        let (s, lost) = (Arc::clone(&self.services), self.lost.clone());
        let priority = self.turn.model.tier.priority;
        let place = async move { s.pool.place(&s, job, priority, lost).await }
            .instrument(self.turn.span.clone());
        ctx.spawn(place.into_actor(self).map(|r, act, ctx| match r {
            Ok(Some((attempt, placement))) => act.placed(attempt, placement, ctx),
            // The answer comes through the inbox.
            Ok(None) => {}
            Err(e) => act.fail(e, ctx),
        }));
    }

    fn attempt(&self) -> u32 {
        self.job.as_ref().map_or(0, |j| j.attempt)
    }

    fn placed(&mut self, attempt: u32, placement: Placement, ctx: &mut Context<Self>) {
        if attempt != self.attempt() {
            return;
        }
        match placement {
            Placement::Placed { worker_id } => {
                self.worker_id = Some(worker_id);
                if self.client_gone {
                    self.cancel();
                }
            }
            Placement::Waiting(reason) => {
                tracing::debug!(job = %self.turn.job_id, reason = reason.as_str(), "the job waits for a worker");
                self.waiting = Some(reason);
            }
            Placement::Refused { busy: true, reason } => {
                tracing::debug!(job = %self.turn.job_id, "placement refused: {reason}");
                self.fail(
                    ApiError::rate_limited(
                        format!(
                            "The server is at capacity for model `{}`; retry shortly",
                            self.turn.model.id
                        ),
                        1,
                    ),
                    ctx,
                )
            }
            Placement::Refused {
                busy: false,
                reason,
            } => {
                tracing::debug!(job = %self.turn.job_id, "placement refused: {reason}");
                self.fail(
                    ApiError::unavailable(format!(
                        "No worker is serving model `{}` right now; try again shortly",
                        self.turn.model.id
                    )),
                    ctx,
                )
            }
        }
    }

    /// The worker of the current attempt is gone: place the next attempt where it left off.
    fn fail_over(&mut self, worker_id: String, ctx: &mut Context<Self>) {
        let Some(job) = self.job.as_mut() else { return };
        tracing::warn!(job = %job.job_id, attempt = job.attempt, worker = %worker_id, produced = self.produced.tokens.len(), "the job's worker is gone; moving the job");
        job.attempt += 1;
        job.resume = self.produced.clone();
        metrics()
            .failovers
            .with_label_values(&[job.model.as_str()])
            .inc();
        self.lost.push(worker_id);
        self.worker_id = None;
        if self.client_gone {
            // Nobody is waiting for the rest: bill what the client got.
            let done = self.produced.tokens.len();
            let prompt = job.prompt.len();
            return self.finish(prompt, done, None, ctx);
        }
        self.place(ctx);
    }

    /// Asks the worker to stop the job; its final event still comes, with what it produced.
    fn cancel(&mut self) {
        let Some(worker) = self.worker_id.clone() else {
            return self.withdraw();
        };
        self.cancel_on(worker);
    }

    fn cancel_on(&self, worker: String) {
        let (s, job_id) = (Arc::clone(&self.services), self.turn.job_id.clone());
        let cancel = async move {
            if let Err(e) = send_command(
                s.bus.as_ref(),
                &s.node_id,
                &worker,
                &job_id,
                &WorkerCommand::Cancel {
                    job_id: job_id.clone(),
                },
            )
            .await
            {
                tracing::error!(job = %job_id, "sending a cancel: {e}");
            }
        };
        actix::spawn(cancel.instrument(self.turn.span.clone()));
    }

    /// Takes a job that waits for a worker out of the coordinator's queue.
    fn withdraw(&self) {
        if self.job.is_some() && self.worker_id.is_none() {
            let (s, job_id) = (Arc::clone(&self.services), self.turn.job_id.clone());
            actix::spawn(async move { s.pool.withdraw(&s, &job_id).await });
        }
    }

    fn renew_hold(&self) {
        if self.held.is_none() {
            return;
        }
        let (store, job_id) = (
            Arc::clone(self.services.billing.store()),
            self.turn.job_id.clone(),
        );
        actix::spawn(async move {
            let until = crate::store::now() + crate::store::HOLD_LEASE_SECS;
            let r = tokio::task::spawn_blocking(move || {
                store.renew_hold(&job_id, until).map_err(|e| (job_id, e))
            })
            .await;
            if let Ok(Err((job, e))) = r {
                tracing::warn!(job = %job, "renewing the hold: {e}");
            }
        });
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    /// Step 1: the hold.
    fn started(&mut self, ctx: &mut Context<Self>) {
        let out = self.out.clone();
        ctx.spawn(
            async move { out.closed().await }
                .into_actor(self)
                .map(|(), act, _| {
                    act.client_gone = true;
                    act.cancel();
                }),
        );

        let Some(prepared) = self.prompt.take() else {
            return;
        };
        let inbox = self.services.inboxes.here();
        self.markup = Some(Markup::new(
            prepared.tools,
            prepared.thinking,
            Box::new(call_id),
        ));
        let (prompt_tokens, max_tokens) = (
            self.billed_prompt(prepared.prompt_ids.len()) as u64,
            prepared.params.max_tokens as u64,
        );
        let job = JobSpec {
            job_id: self.turn.job_id.clone(),
            attempt: 0,
            account_id: self.turn.key.record.account_id.clone(),
            model: self.turn.model.id.clone(),
            prompt: prepared.prompt_ids,
            params: prepared.params,
            resume: Resume::default(),
            reply_to: inbox.stream().to_string(),
        };
        let then = match self.turn.span.in_scope(|| {
            self.services
                .pool
                .placement_outbox(&self.services, &job, self.turn.model.tier.priority)
        }) {
            Ok(then) => then,
            Err(e) => return self.fail(e, ctx),
        };
        let placed = then.is_some();
        // Before the hold: with `then`, the answer to the placement can come before the
        // hold's own reply. From now on every answer finds the session.
        inbox.subscribe(&self.turn.job_id, ctx.address().recipient());
        self.inbox = Some(inbox);
        let choice = self.turn.request.token_type.unwrap_or(TokenChoice::Auto);
        let auto = choice == TokenChoice::Auto;
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
        let billing = Arc::clone(&self.services.billing);
        let span =
            tracing::info_span!(parent: &self.turn.span, "billing.hold", prompt_tokens, max_tokens);
        ctx.wait(async move { billing.hold(hold).await }.instrument(span).into_actor(self).map(move |r, act, ctx| match r {
            Ok(h) => {
                metrics().billing_holds.with_label_values(&["held"]).inc();
                act.held = Some(h);
                act.dispatch(job, placed, ctx);
            }
            Err(BillingError::Store(StoreError::Insufficient { token, needed, available })) => {
                metrics().billing_holds.with_label_values(&["insufficient"]).inc();
                let which = if auto { "neither the Spark nor the SOGNI balance covers".to_string() } else { format!("the {token} balance does not cover") };
                let message = format!(
                    "Insufficient balance: {which} this request, which can cost up to {needed} {token} \
                     ({prompt_tokens} prompt tokens and up to {max_tokens} completion tokens; {available} {token} available). \
                     Lower max_tokens or add credit."
                );
                act.fail(ApiError::insufficient_balance(message), ctx)
            }
            Err(BillingError::Store(StoreError::KeyRevoked(_))) => {
                metrics().billing_holds.with_label_values(&["revoked"]).inc();
                act.fail(ApiError::unauthorized("Incorrect API key provided"), ctx)
            }
            Err(e) => {
                metrics().billing_holds.with_label_values(&["failed"]).inc();
                if placed {
                    // The hold may have been written, and its placement request with it: take
                    // the request back (a hold written stays open until the reaper releases it).
                    act.job = Some(job);
                }
                act.fail(ApiError::logged("the hold", e), ctx)
            }
        }));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(inbox) = &self.inbox {
            inbox.unsubscribe(&self.turn.job_id);
        }
    }
}

impl Handler<JobUpdate> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: JobUpdate, ctx: &mut Context<Self>) {
        let current = self.attempt();
        match msg.message {
            NodeMessage::Placement { attempt, placement } => self.placed(attempt, placement, ctx),
            NodeMessage::Lost { attempt, worker_id }
                if attempt == current && self.held.is_some() =>
            {
                self.fail_over(worker_id, ctx)
            }
            NodeMessage::Lost { .. } => {}
            NodeMessage::Worker { attempt, event } if attempt != current => {
                // A worker that was given up on (it hung) woke up: stop what it still runs.
                if matches!(
                    event,
                    WorkerEvent::Accepted { .. } | WorkerEvent::Job(JobEvent::Text { .. })
                ) {
                    self.cancel_on(msg.sender);
                }
            }
            NodeMessage::Worker { event, .. } => self.worker_event(event, msg.arrival, ctx),
        }
    }
}

impl SessionActor {
    fn worker_event(&mut self, event: WorkerEvent, arrival: Arrival, ctx: &mut Context<Self>) {
        match event {
            WorkerEvent::Accepted { worker_id } => {
                self.worker_id = Some(worker_id);
                if !self.started {
                    self.started = true;
                    if let Some(at) = self.dispatched {
                        self.metrics.queue_time.observe(at.elapsed().as_secs_f64());
                    }
                    self.in_flight = GaugeGuard::new(self.metrics.running.clone());
                    self.emit(SessionEvent::Started);
                }
                if self.client_gone {
                    self.cancel();
                }
            }
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
            WorkerEvent::Job(JobEvent::Text {
                text,
                tokens,
                logprobs,
            }) => {
                self.token_times(tokens.len());
                self.produced.tokens.extend(tokens);
                self.produced.text_bytes += text.len();
                if !self.client_gone {
                    let mut deltas = self
                        .markup
                        .as_mut()
                        .map(|m| m.push(&text))
                        .unwrap_or_default();
                    if !logprobs.is_empty() {
                        let tok = &self.turn.model.tokenizer;
                        deltas.push(Delta::Logprobs(
                            logprobs.iter().map(|l| logprob_entry(tok, l)).collect(),
                        ));
                    }
                    deltas
                        .into_iter()
                        .for_each(|d| self.emit(SessionEvent::Delta(d, arrival)));
                    if self.client_gone {
                        self.cancel();
                    }
                }
            }
            WorkerEvent::Job(JobEvent::Finished {
                finish,
                prompt_tokens,
                completion_tokens,
            }) => {
                let deltas = self.markup.as_mut().map(Markup::finish).unwrap_or_default();
                deltas
                    .into_iter()
                    .for_each(|d| self.emit(SessionEvent::Delta(d, arrival)));
                let tool_calls = self.markup.as_ref().is_some_and(Markup::made_calls);
                self.count_finished(finish, tool_calls, prompt_tokens, completion_tokens);
                let done = SessionEvent::Done {
                    finish,
                    tool_calls,
                    usage: Usage {
                        prompt_tokens,
                        completion_tokens,
                    },
                };
                self.finish(prompt_tokens, completion_tokens, Some(done), ctx);
            }
            WorkerEvent::Job(JobEvent::Failed(reason)) => {
                tracing::error!(job = %self.turn.job_id, "the engine failed the job: {reason}");
                self.fail(ApiError::internal(), ctx)
            }
        }
    }
}

impl SessionActor {
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
        prompt_tokens: usize,
        completion_tokens: usize,
    ) {
        self.metrics
            .e2e_latency
            .observe(self.turn.arrived.elapsed().as_secs_f64());
        self.metrics.prompt_tokens.inc_by(prompt_tokens as u64);
        self.metrics
            .generation_tokens
            .inc_by(completion_tokens as u64);
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
            format!(
                "call_{:024x}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            )
        }
    }
}
