//! The SessionActor: one chat request's turn, from validated request to settled bill.
//!
//! It renders and tokenizes the prompt, has the account's BillingAccountActor hold the
//! worst case, asks the coordinator for a worker, puts the job on that worker's bus inbox
//! and relays the worker's events to the front as [`SessionEvent`]s. When the job ends it
//! settles the exact usage and releases the rest of the hold. If the client goes away the
//! job is cancelled at once, and the session still waits for the worker's final count so
//! that only the tokens produced are billed.

use std::sync::Arc;

use actix::{Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, WrapFuture};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::inbox::{JobUpdate, NodeInbox, Subscribe, Unsubscribe};
use super::models::{ModelCatalog, ModelEntry};
use super::prompt::{prepare, PreparedPrompt};
use crate::api::chat_request::{ChatRequest, TokenChoice};
use crate::api::chat_response::Usage;
use crate::api::error::ApiError;
use crate::billing::account_actor::{Billing, BillingError, HoldJob, SettleJob};
use crate::billing::limits::Permit;
use crate::bus::{streams, Bus};
use crate::config::Config;
use crate::coordinator::{CoordinatorActor, Place, PlaceError};
use crate::engine::generate::FinishReason;
use crate::store::{ApiKeyRecord, StoreError};
use crate::worker::actor::send_command;
use crate::worker::engine_thread::JobEvent;
use crate::worker::protocol::{JobSpec, WorkerCommand, WorkerEvent};

/// What every session of this node shares.
pub struct Services {
    pub node_id: String,
    pub bus: Arc<dyn Bus>,
    pub billing: Arc<Billing>,
    pub coordinator: Addr<CoordinatorActor>,
    /// Reads this node's stream (`streams::node(node_id)`).
    pub inbox: Addr<NodeInbox>,
    pub models: ModelCatalog,
    pub config: Config,
}

/// What the front hears from a session, in order: `Started` (a worker took the job) then
/// text and `Done`, or an `Error` at any point.
#[derive(Debug)]
pub enum SessionEvent {
    Started,
    Text(String),
    Done { finish: FinishReason, usage: Usage },
    Error(ApiError),
}

/// One request admitted by the front.
pub struct Turn {
    pub job_id: String,
    pub key: ApiKeyRecord,
    pub model: Arc<ModelEntry>,
    pub request: ChatRequest,
    /// Held for the whole turn: the key's concurrency count.
    pub permit: Permit,
}

pub struct SessionActor {
    services: Arc<Services>,
    turn: Turn,
    out: UnboundedSender<SessionEvent>,
    prepared: Option<PreparedPrompt>,
    /// A hold is in place and not yet settled.
    held: bool,
    /// The worker whose inbox has the job (set once it is dispatched).
    worker_id: Option<String>,
    client_gone: bool,
}

impl SessionActor {
    /// Starts the turn; its events arrive on the returned receiver, and dropping the
    /// receiver cancels the turn.
    pub fn start_turn(services: Arc<Services>, turn: Turn) -> UnboundedReceiver<SessionEvent> {
        let (out, rx) = unbounded_channel();
        SessionActor { services, turn, out, prepared: None, held: false, worker_id: None, client_gone: false }.start();
        rx
    }

    fn emit(&mut self, event: SessionEvent) {
        if self.out.send(event).is_err() {
            self.client_gone = true;
        }
    }

    /// Ends the turn with an error once the hold (if any) is released, so a client that
    /// sees the error sees its balance whole again.
    fn fail(&mut self, error: ApiError, ctx: &mut Context<Self>) {
        self.finish(0, 0, Some(SessionEvent::Error(error)), ctx);
    }

    /// Settles the hold (if any) for the given usage, then sends `then` and stops.
    fn finish(&mut self, prompt_tokens: usize, completion_tokens: usize, then: Option<SessionEvent>, ctx: &mut Context<Self>) {
        if !self.held {
            if let Some(e) = then {
                self.emit(e);
            }
            ctx.stop();
            return;
        }
        self.held = false;
        let billing = Arc::clone(&self.services.billing);
        let account = self.turn.key.account_id.clone();
        let job = SettleJob {
            job_id: self.turn.job_id.clone(),
            price: self.turn.model.tier.price(),
            prompt_tokens: prompt_tokens as u64,
            completion_tokens: completion_tokens as u64,
            worker_id: self.worker_id.clone(),
        };
        let settle = async move { billing.settle(&account, job).await };
        ctx.wait(settle.into_actor(self).map(move |r, act, ctx| {
            if let Err(e) = r {
                tracing::error!(job = %act.turn.job_id, "settling the hold failed; it stays open: {e}");
            }
            if let Some(e) = then {
                act.emit(e);
            }
            ctx.stop();
        }));
    }

    /// Step 2: the hold is in place; find a worker and hand it the job.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        let Some(prepared) = self.prepared.take() else { return };
        if self.client_gone {
            return self.finish(0, 0, None, ctx);
        }
        let s = Arc::clone(&self.services);
        let me = ctx.address().recipient();
        let spec = JobSpec {
            job_id: self.turn.job_id.clone(),
            model: self.turn.model.id.clone(),
            prompt: prepared.prompt_ids,
            params: prepared.params,
            reply_to: streams::node(&s.node_id),
        };
        let go = async move {
            let worker = s.coordinator.send(Place { model: spec.model.clone() }).await.map_err(|e| ApiError::logged("the coordinator", e))?.map_err(|e| match e {
                PlaceError::NoWorker(m) => ApiError::unavailable(format!("No worker is serving model `{m}` right now; try again shortly")),
                PlaceError::Busy(m) => ApiError::rate_limited(format!("The server is at capacity for model `{m}`; retry shortly"), 1),
            })?;
            s.inbox.send(Subscribe { job_id: spec.job_id.clone(), session: me }).await.map_err(|e| ApiError::logged("the node inbox", e))?;
            let job_id = spec.job_id.clone();
            send_command(s.bus.as_ref(), &s.node_id, &worker, &job_id, &WorkerCommand::Run(spec)).await.map_err(|e| ApiError::logged("the bus", e))?;
            Ok::<String, ApiError>(worker)
        };
        ctx.wait(go.into_actor(self).map(|r, act, ctx| match r {
            Ok(worker) => {
                act.worker_id = Some(worker);
                if act.client_gone {
                    act.cancel();
                }
            }
            Err(e) => act.fail(e, ctx),
        }));
    }

    /// Asks the worker to stop the job; its final event still comes, with what it produced.
    fn cancel(&mut self) {
        let Some(worker) = self.worker_id.clone() else { return };
        let (s, job_id) = (Arc::clone(&self.services), self.turn.job_id.clone());
        actix::spawn(async move {
            if let Err(e) = send_command(s.bus.as_ref(), &s.node_id, &worker, &job_id, &WorkerCommand::Cancel { job_id: job_id.clone() }).await {
                tracing::error!(job = %job_id, "sending a cancel: {e}");
            }
        });
    }
}


impl Actor for SessionActor {
    type Context = Context<Self>;

    /// Step 1: prompt and hold.
    fn started(&mut self, ctx: &mut Context<Self>) {
        let out = self.out.clone();
        ctx.spawn(async move { out.closed().await }.into_actor(self).map(|(), act, _| {
            act.client_gone = true;
            act.cancel();
        }));

        let m = &self.turn.model;
        let prepared = match prepare(&self.turn.request, &m.template, &m.tokenizer, &m.tier.limits(), m.context_length) {
            Ok(p) => p,
            Err(e) => return self.fail(e, ctx),
        };
        let hold = HoldJob {
            job_id: self.turn.job_id.clone(),
            account_id: self.turn.key.account_id.clone(),
            choice: self.turn.request.token_type.unwrap_or(TokenChoice::Auto),
            price: m.tier.price(),
            prompt_tokens: prepared.prompt_ids.len() as u64,
            max_tokens: prepared.params.max_tokens as u64,
        };
        let (prompt_tokens, max_tokens, auto) = (hold.prompt_tokens, hold.max_tokens, hold.choice == TokenChoice::Auto);
        self.prepared = Some(prepared);
        let billing = Arc::clone(&self.services.billing);
        ctx.wait(async move { billing.hold(hold).await }.into_actor(self).map(move |r, act, ctx| match r {
            Ok(_) => {
                act.held = true;
                act.dispatch(ctx);
            }
            Err(BillingError::Store(StoreError::Insufficient { token, needed, available })) => {
                let which = if auto { "neither the Spark nor the SOGNI balance covers".to_string() } else { format!("the {token} balance does not cover") };
                let message = format!(
                    "Insufficient balance: {which} this request, which can cost up to {needed} {token} \
                     ({prompt_tokens} prompt tokens and up to {max_tokens} completion tokens; {available} {token} available). \
                     Lower max_tokens or add credit."
                );
                act.fail(ApiError::insufficient_balance(message), ctx)
            }
            Err(e) => act.fail(ApiError::logged("the hold", e), ctx),
        }));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.services.inbox.do_send(Unsubscribe(self.turn.job_id.clone()));
    }
}

impl Handler<JobUpdate> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: JobUpdate, ctx: &mut Context<Self>) {
        match msg.0 {
            WorkerEvent::Accepted { worker_id } => {
                self.worker_id = Some(worker_id);
                self.emit(SessionEvent::Started);
            }
            WorkerEvent::Rejected { busy: true, .. } => self.fail(ApiError::rate_limited("The server is at capacity for this model; retry shortly", 1), ctx),
            WorkerEvent::Rejected { busy: false, reason } => {
                tracing::warn!(job = %self.turn.job_id, "a worker refused the job: {reason}");
                self.fail(ApiError::unavailable("No worker could take the request; try again shortly"), ctx)
            }
            WorkerEvent::Job(JobEvent::Text(t)) => {
                if !self.client_gone {
                    self.emit(SessionEvent::Text(t));
                    if self.client_gone {
                        self.cancel();
                    }
                }
            }
            WorkerEvent::Job(JobEvent::Finished { finish, prompt_tokens, completion_tokens }) => {
                let done = SessionEvent::Done { finish, usage: Usage { prompt_tokens, completion_tokens } };
                self.finish(prompt_tokens, completion_tokens, Some(done), ctx);
            }
            WorkerEvent::Job(JobEvent::Failed(reason)) => {
                tracing::error!(job = %self.turn.job_id, "the engine failed the job: {reason}");
                self.fail(ApiError::internal(), ctx)
            }
        }
    }
}
