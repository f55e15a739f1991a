//! The ToolExecutorActor: one hosted media call, from hold to settled bill. It holds the
//! call's price (units times the tool's unit price) before anything runs, asks the one
//! coordinator for a media worker that runs the call's pipeline, relays the worker's
//! progress, and settles on the outputs (or releases the hold on failure or cancel). A call
//! whose worker dies moves to another worker under the same idempotency key, so the new
//! worker resumes the backend job rather than starting (and billing) another. Dropping the
//! progress receiver (the client went away) cancels the call.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, WrapFuture};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

use super::call::ReadyCall;
use super::results::{ToolError, ToolProgress};
use crate::api::chat_request::TokenChoice;
use crate::billing::accounts::{BillingError, HoldJob, Presented, SettleJob};
use crate::billing::pricing::ModelPrice;
use crate::money::Amount;
use crate::protocol::media::{Asset, MediaEvent};
use crate::protocol::{
    self, JobParams, JobSpec, NodeMessage, Placement, Progress, WorkerCommand, WorkerEvent,
};
use crate::session::inbox::{JobUpdate, NodeInbox};
use crate::session::{placement, Services};
use crate::store::{Hold, StoreError};

/// The longest a media call may take, queue included.
const CALL_TIMEOUT: Duration = Duration::from_secs(1800);

/// One call to run.
pub struct MediaCall {
    /// Unique per call; also its idempotency key.
    pub job_id: String,
    pub call_id: String,
    pub tool: String,
    pub key: Presented,
    pub choice: TokenChoice,
    pub ready: ReadyCall,
    /// USD per unit.
    pub unit_usd: Amount,
    pub priority: u8,
}

pub struct ToolExecutorActor {
    services: Arc<Services>,
    call: MediaCall,
    progress: UnboundedSender<ToolProgress>,
    done: Option<oneshot::Sender<Result<Vec<Asset>, ToolError>>>,
    hold: Option<Hold>,
    attempt: u32,
    worker: Option<String>,
    lost: Vec<String>,
    cancelled: bool,
    inbox: Option<Arc<NodeInbox>>,
}

impl ToolExecutorActor {
    /// Runs `call`; its progress arrives on `progress` and its outcome on the returned
    /// receiver. Dropping `progress`'s receiver cancels it.
    pub fn run(
        services: Arc<Services>,
        call: MediaCall,
        progress: UnboundedSender<ToolProgress>,
    ) -> oneshot::Receiver<Result<Vec<Asset>, ToolError>> {
        let (tx, rx) = oneshot::channel();
        ToolExecutorActor {
            services,
            call,
            progress,
            done: Some(tx),
            hold: None,
            attempt: 0,
            worker: None,
            lost: Vec::new(),
            cancelled: false,
            inbox: None,
        }
        .start();
        rx
    }

    /// The price of one unit, as a price per "input token" of one unit each: the ledger's
    /// exact arithmetic, unchanged.
    fn price(&self) -> ModelPrice {
        ModelPrice {
            input_usd_per_m: self
                .call
                .unit_usd
                .checked_mul_int(1_000_000)
                .unwrap_or(self.call.unit_usd),
            output_usd_per_m: Amount::ZERO,
        }
    }

    fn spec(&self, inbox: &NodeInbox) -> JobSpec {
        JobSpec {
            job_id: self.call.job_id.clone(),
            attempt: self.attempt,
            account_id: self.call.key.record.account_id.clone(),
            model: self.call.ready.pipeline.clone(),
            prompt: Vec::new(),
            params: JobParams::greedy(0),
            resume: Progress::default(),
            reply_to: inbox.stream().to_string(),
            media: Some(self.call.ready.task.clone()),
            images: Vec::new(),
        }
    }

    fn note(&self, status: &'static str, progress: f32) {
        let _ = self.progress.send(ToolProgress {
            tool: self.call.tool.clone(),
            call_id: self.call.call_id.clone(),
            status,
            progress,
        });
    }

    fn request_placement(&self, ctx: &mut Context<Self>) {
        let Some(inbox) = &self.inbox else { return };
        let (s, spec, lost) = (
            Arc::clone(&self.services),
            self.spec(inbox),
            self.lost.clone(),
        );
        let priority = self.call.priority;
        ctx.spawn(
            async move { placement::request(&s, spec, priority, lost).await }
                .into_actor(self)
                .map(|r, act, ctx| {
                    if let Err(e) = r {
                        act.finish(
                            0,
                            Err(ToolError::new("MODEL_UNAVAILABLE", e.message, true)),
                            ctx,
                        );
                    }
                }),
        );
    }

    /// Settles `units` (0 releases the hold) and reports `outcome`.
    fn finish(
        &mut self,
        units: u64,
        outcome: Result<Vec<Asset>, ToolError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(done) = self.done.take() else { return };
        let status = if outcome.is_ok() {
            "completed"
        } else {
            "failed"
        };
        self.note(status, if outcome.is_ok() { 1.0 } else { 0.0 });
        let Some(hold) = self.hold.take() else {
            let _ = done.send(outcome);
            return ctx.stop();
        };
        if self.worker.is_none() {
            placement::withdraw_later(&self.services, &self.call.job_id);
        }
        let job = SettleJob {
            job_id: self.call.job_id.clone(),
            price: self.price(),
            prompt_tokens: units,
            completion_tokens: 0,
            worker_id: self.worker.clone(),
            hold: Some(hold),
        };
        let (billing, account) = (
            Arc::clone(&self.services.billing),
            self.call.key.record.account_id.clone(),
        );
        ctx.wait(
            async move { billing.settle_retrying(&account, job).await }
                .into_actor(self)
                .map(move |r, act, ctx| {
                    if let Err(e) = r {
                        tracing::error!(job = %act.call.job_id, "settling a media call failed; its hold stays open until the reaper releases it: {e}");
                    }
                    let _ = done.send(outcome);
                    ctx.stop();
                }),
        );
    }

    fn cancel(&mut self, ctx: &mut Context<Self>) {
        if self.cancelled {
            return;
        }
        self.cancelled = true;
        match self.worker.clone() {
            Some(worker) => {
                let (s, job_id) = (Arc::clone(&self.services), self.call.job_id.clone());
                actix::spawn(async move {
                    let c = WorkerCommand::Cancel {
                        job_id: job_id.clone(),
                    };
                    if let Err(e) =
                        protocol::to_worker(s.bus.as_ref(), &s.node_id, &worker, &job_id, &c).await
                    {
                        tracing::warn!(job = %job_id, "cancelling a media call: {e}");
                    }
                });
            }
            None if self.hold.is_some() => self.finish(0, Err(cancelled()), ctx),
            // The hold's answer sees `cancelled`.
            None => {}
        }
    }
}

fn cancelled() -> ToolError {
    ToolError::new("CANCELLED", "the request was cancelled", false)
}

impl Actor for ToolExecutorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let progress = self.progress.clone();
        ctx.spawn(
            async move { progress.closed().await }
                .into_actor(self)
                .map(|(), act, ctx| act.cancel(ctx)),
        );
        ctx.run_later(CALL_TIMEOUT, |act, ctx| {
            act.cancel(ctx);
            act.finish(
                0,
                Err(ToolError::new(
                    "TIMEOUT",
                    "the media job took too long",
                    true,
                )),
                ctx,
            );
        });
        let inbox = self.services.inboxes.here();
        inbox.subscribe(&self.call.job_id, ctx.address().recipient());
        self.inbox = Some(inbox);
        let hold = HoldJob {
            job_id: self.call.job_id.clone(),
            account_id: self.call.key.record.account_id.clone(),
            choice: self.call.choice,
            price: self.price(),
            prompt_tokens: self.call.ready.units,
            max_tokens: 0,
            key: self.call.key.proof.clone(),
            then: None,
        };
        let billing = Arc::clone(&self.services.billing);
        self.note("queued", 0.0);
        ctx.wait(
            async move { billing.hold(hold).await }
                .into_actor(self)
                .map(|r, act, ctx| match r {
                    Ok(hold) => {
                        act.hold = Some(hold);
                        if act.cancelled {
                            return act.finish(0, Err(cancelled()), ctx);
                        }
                        act.request_placement(ctx);
                    }
                    Err(BillingError::Store(StoreError::Insufficient { token, needed, available })) => {
                        let m = format!("the balance does not cover this call: it costs {needed} {token} and {available} {token} is available");
                        act.finish(0, Err(ToolError::new("COST_LIMIT_EXCEEDED", m, false)), ctx)
                    }
                    Err(e) => {
                        tracing::error!(job = %act.call.job_id, "holding a media call: {e}");
                        act.finish(0, Err(ToolError::new("MODEL_UNAVAILABLE", "billing is unavailable", true)), ctx)
                    }
                }),
        );
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(inbox) = &self.inbox {
            inbox.unsubscribe(&self.call.job_id);
        }
    }
}

impl Handler<JobUpdate> for ToolExecutorActor {
    type Result = ();

    fn handle(&mut self, msg: JobUpdate, ctx: &mut Context<Self>) {
        match msg.message {
            NodeMessage::Placement { attempt, placement } if attempt == self.attempt => {
                match placement {
                    Placement::Placed { worker_id } => {
                        self.worker = Some(worker_id);
                        if self.cancelled {
                            self.cancelled = false;
                            self.cancel(ctx);
                        }
                    }
                    Placement::Waiting(_) => self.note("queued", 0.0),
                    Placement::Refused { busy, reason } => {
                        tracing::info!(job = %self.call.job_id, "a media call was refused: {reason}");
                        let m = if busy {
                            "every media worker is busy; try again shortly"
                        } else {
                            "no media worker runs this tool right now"
                        };
                        self.finish(0, Err(ToolError::new("MODEL_UNAVAILABLE", m, true)), ctx)
                    }
                }
            }
            NodeMessage::Lost { attempt, worker_id } if attempt == self.attempt => {
                tracing::warn!(job = %self.call.job_id, worker = %worker_id, "a media call's worker is gone; moving the call");
                self.lost.push(worker_id);
                self.worker = None;
                self.attempt += 1;
                if self.cancelled {
                    return self.finish(0, Err(cancelled()), ctx);
                }
                self.request_placement(ctx);
            }
            NodeMessage::Worker { attempt, event } if attempt == self.attempt => match event {
                WorkerEvent::Accepted { worker_id } => {
                    self.worker = Some(worker_id);
                    self.note("in_progress", 0.0);
                }
                WorkerEvent::Media(MediaEvent::Progress { fraction }) => {
                    self.note("in_progress", fraction.clamp(0.0, 1.0))
                }
                WorkerEvent::Media(MediaEvent::Done { assets }) => {
                    let units = match assets.first().map(|a| a.kind) {
                        // Images are billed as made, at most as held.
                        Some(crate::protocol::media::MediaKind::Image) => assets.len() as u64,
                        _ => self.call.ready.units,
                    };
                    self.finish(units, Ok(assets), ctx)
                }
                WorkerEvent::Media(MediaEvent::Failed {
                    error_type,
                    message,
                    retryable,
                }) => self.finish(0, Err(ToolError::new(&error_type, message, retryable)), ctx),
                WorkerEvent::Rejected { reason, .. } => self.finish(
                    0,
                    Err(ToolError::new("MODEL_UNAVAILABLE", reason, true)),
                    ctx,
                ),
                other => {
                    tracing::warn!(job = %self.call.job_id, "an unexpected event for a media call: {other:?}")
                }
            },
            _ => {}
        }
    }
}
