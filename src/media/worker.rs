//! The MediaWorkerActor: a worker of kind `media`. It registers the pipelines its backends
//! run, takes media jobs from its bus inbox like an LLM worker takes generations, runs each
//! on a backend, stores the outputs as the job's account's assets, and reports progress and
//! the outcome to the session's inbox. Each job's idempotency key finds what an earlier
//! attempt left: stored outputs are returned as they are, a backend job is waited for, and
//! only otherwise is a new one started, its id recorded before waiting.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, MessageResult,
    ResponseActFuture, WrapFuture,
};
use serde_json::{Map, Value};

use super::backend::{BackendError, BackendJob, MediaBackend, Output, Started};
use super::store::{Assets, Dispatch, NewAsset};
use crate::bus::{Bus, BusError, BusFuture};
use crate::protocol::media::{Asset, MediaEvent, MediaKind, MediaTask};
use crate::protocol::{
    self, JobRef, JobSpec, NodeMessage, WorkerCommand, WorkerEvent, WorkerInfo, WorkerKind,
    WorkerLoad,
};
use crate::worker::actor::{GetLoad, Leave, SetDraining, HEARTBEAT};
use crate::worker::membership;

/// The smallest step of progress worth a message.
const PROGRESS_STEP: f32 = 0.05;

pub struct MediaWorkerActor {
    pub info: WorkerInfo,
    backends: Vec<Arc<dyn MediaBackend>>,
    assets: Assets,
    bus: Arc<dyn Bus>,
    /// Jobs running, with their cancel flags.
    running: HashMap<String, (Arc<AtomicBool>, JobRef)>,
    received: Vec<String>,
    completed: u64,
    cancelled: u64,
    draining: bool,
    left: bool,
}

impl MediaWorkerActor {
    /// A media worker running up to `concurrency` jobs at once on `backends`.
    pub fn new(
        worker_id: &str,
        backends: Vec<Arc<dyn MediaBackend>>,
        concurrency: usize,
        assets: Assets,
        bus: Arc<dyn Bus>,
    ) -> Self {
        let mut pipelines: Vec<String> = backends.iter().flat_map(|b| b.pipelines()).collect();
        pipelines.sort();
        pipelines.dedup();
        let info = WorkerInfo {
            worker_id: worker_id.into(),
            kind: WorkerKind::Media,
            model_id: "media".into(),
            context_length: 0,
            max_batch: concurrency as u64,
            kv_capacity: 0,
            simulated: false,
            pipelines,
        };
        Self {
            info,
            backends,
            assets,
            bus,
            running: HashMap::new(),
            received: Vec::new(),
            completed: 0,
            cancelled: 0,
            draining: false,
            left: false,
        }
    }

    fn load(&self) -> WorkerLoad {
        WorkerLoad {
            running: self.running.len() as u64,
            completed: self.completed,
            cancelled: self.cancelled,
            capacity: self.info.max_batch,
            draining: self.draining,
            jobs: self.running.values().map(|(_, r)| r.clone()).collect(),
            ..WorkerLoad::default()
        }
    }

    fn beat(&mut self, leaving: bool) -> BusFuture<'static, ()> {
        let received = std::mem::take(&mut self.received);
        membership::heartbeat(&self.bus, &self.info, self.load(), received, leaving)
    }

    fn beat_in_background(&mut self) {
        if !self.left {
            membership::in_background(self.beat(false));
        }
    }

    /// The first backend (in the order given) that runs `pipeline`.
    fn backend_for(&self, pipeline: &str) -> Option<Arc<dyn MediaBackend>> {
        self.backends
            .iter()
            .find(|b| b.pipelines().iter().any(|p| p == pipeline))
            .cloned()
    }
}

impl Actor for MediaWorkerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address().downgrade();
        let read = membership::read_inbox(
            Arc::clone(&self.bus),
            &self.info.worker_id,
            move |c, _| match me.upgrade() {
                Some(me) => {
                    me.do_send(MediaCommand(c));
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

#[derive(Message)]
#[rtype(result = "()")]
struct MediaCommand(WorkerCommand);

impl Handler<MediaCommand> for MediaWorkerActor {
    type Result = ();

    fn handle(&mut self, msg: MediaCommand, ctx: &mut Context<Self>) {
        match msg.0 {
            WorkerCommand::Run(spec) => {
                self.received.push(spec.job_id.clone());
                self.run(*spec, ctx);
            }
            WorkerCommand::Cancel { job_id } => {
                if let Some((flag, _)) = self.running.get(&job_id) {
                    flag.store(true, Ordering::SeqCst);
                }
            }
        }
    }
}

impl MediaWorkerActor {
    fn run(&mut self, spec: JobSpec, ctx: &mut Context<Self>) {
        let reply = Reply {
            bus: Arc::clone(&self.bus),
            worker_id: self.info.worker_id.clone(),
            stream: spec.reply_to.clone(),
            job_id: spec.job_id.clone(),
            attempt: spec.attempt,
        };
        let backend = self.backend_for(&spec.model);
        let refusal = match (&spec.media, &backend) {
            _ if self.draining => Some(format!("worker {} is draining", self.info.worker_id)),
            (None, _) => Some("not a media job".to_string()),
            (_, None) => Some(format!("no backend here runs `{}`", spec.model)),
            _ if self.running.len() as u64 >= self.info.max_batch => {
                Some("every slot is busy".to_string())
            }
            _ => None,
        };
        let (Some(task), Some(backend), None) = (spec.media.clone(), backend, refusal.clone())
        else {
            let busy = self.running.len() as u64 >= self.info.max_batch;
            let reason = refusal.unwrap_or_default();
            actix::spawn(async move { reply.post(WorkerEvent::Rejected { busy, reason }).await });
            return;
        };
        tracing::info!(job = %spec.job_id, attempt = spec.attempt, pipeline = %spec.model, backend = backend.url(), "media job started");
        let cancel = Arc::new(AtomicBool::new(false));
        self.running
            .insert(spec.job_id.clone(), (Arc::clone(&cancel), spec.job_ref()));
        let job = RunJob {
            pipeline: spec.model.clone(),
            account_id: spec.account_id.clone(),
            task,
            backend,
            assets: self.assets.clone(),
            cancel,
        };
        let (me, job_id) = (ctx.address().downgrade(), spec.job_id);
        actix::spawn(async move {
            reply
                .post(WorkerEvent::Accepted {
                    worker_id: reply.worker_id.clone(),
                })
                .await;
            let progress = Mutex::new(0.0f32);
            let (bus_reply, pending) = (&reply, Mutex::new(Vec::new()));
            let report = |f: f32| {
                let mut last = crate::locks::lock(&progress);
                if f - *last >= PROGRESS_STEP || (f >= 1.0 && *last < 1.0) {
                    *last = f;
                    crate::locks::lock(&pending).push(f);
                }
            };
            let outcome = {
                let run = job.run(&report);
                tokio::pin!(run);
                loop {
                    tokio::select! {
                        r = &mut run => break r,
                        () = tokio::time::sleep(Duration::from_millis(50)) => {
                            let due: Vec<f32> = std::mem::take(&mut *crate::locks::lock(&pending));
                            for fraction in due {
                                bus_reply.post(WorkerEvent::Media(MediaEvent::Progress { fraction })).await;
                            }
                        }
                    }
                }
            };
            let cancelled = matches!(&outcome, Err(e) if e.error_type == "CANCELLED");
            let event = match outcome {
                Ok(assets) => MediaEvent::Done { assets },
                Err(e) => MediaEvent::Failed {
                    error_type: e.error_type.into(),
                    message: e.message,
                    retryable: e.retryable,
                },
            };
            reply.post(WorkerEvent::Media(event)).await;
            if let Some(me) = me.upgrade() {
                me.do_send(Ended { job_id, cancelled });
            }
        });
    }
}

/// One job's work, off the actor.
struct RunJob {
    pipeline: String,
    account_id: String,
    task: MediaTask,
    backend: Arc<dyn MediaBackend>,
    assets: Assets,
    cancel: Arc<AtomicBool>,
}

impl RunJob {
    async fn run(
        &self,
        progress: &(dyn Fn(f32) + Send + Sync),
    ) -> Result<Vec<Asset>, BackendError> {
        let key = &self.task.idempotency_key;
        let record = self.assets.dispatch(key).await.map_err(store_failed)?;
        if let Some(Dispatch {
            assets: Some(done), ..
        }) = &record
        {
            tracing::info!(key = %key, "an earlier attempt finished this media job; returning its outputs");
            return Ok(done.clone());
        }
        let backend_job = match record {
            Some(d) if d.backend == self.backend.url() => {
                tracing::info!(key = %key, backend_job = %d.backend_job, "resuming the backend job an earlier attempt started");
                d.backend_job
            }
            _ => match self.backend.start(&self.backend_job().await?).await? {
                Started::Done(outputs) => return self.store(outputs, None).await,
                Started::Submitted(id) => {
                    let d = Dispatch {
                        backend: self.backend.url().into(),
                        backend_job: id.clone(),
                        assets: None,
                    };
                    self.assets
                        .record_dispatch(key, &d)
                        .await
                        .map_err(store_failed)?;
                    id
                }
            },
        };
        let outputs = {
            let wait = self.backend.wait(&backend_job, progress);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    r = &mut wait => break r?,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {
                        if self.cancel.load(Ordering::SeqCst) {
                            self.backend.cancel(&backend_job).await;
                            return Err(BackendError {
                                error_type: "CANCELLED",
                                message: "the request was cancelled".into(),
                                retryable: false,
                            });
                        }
                    }
                }
            }
        };
        self.store(outputs, Some(backend_job)).await
    }

    /// The job as its backend takes it: the arguments, and the input media's bytes.
    async fn backend_job(&self) -> Result<BackendJob, BackendError> {
        let arguments: Map<String, Value> = serde_json::from_str(&self.task.arguments)
            .map_err(|e| BackendError::invalid(format!("the arguments are not an object: {e}")))?;
        let mut inputs = Vec::new();
        for input in &self.task.inputs {
            let bytes = self
                .assets
                .bytes(&input.asset.id)
                .await
                .map_err(store_failed)?
                .ok_or_else(|| BackendError {
                    error_type: "ASSET_NOT_FOUND",
                    message: format!("the input asset {} is gone", input.asset.id),
                    retryable: false,
                })?;
            inputs.push((input.role.clone(), input.asset.clone(), bytes));
        }
        Ok(BackendJob {
            pipeline: self.pipeline.clone(),
            tool: self.task.tool.clone(),
            arguments,
            inputs,
            key: self.task.idempotency_key.clone(),
        })
    }

    /// Stores the outputs as the account's assets, and records them under the key.
    async fn store(
        &self,
        outputs: Vec<Output>,
        backend_job: Option<String>,
    ) -> Result<Vec<Asset>, BackendError> {
        let mut assets = Vec::with_capacity(outputs.len());
        for o in outputs {
            let (width, height) = match o.kind {
                MediaKind::Image => image::load_from_memory(&o.bytes)
                    .map(|i| (Some(i.width()), Some(i.height())))
                    .unwrap_or((None, None)),
                _ => (None, None),
            };
            let duration_ms = (o.kind == MediaKind::Audio)
                .then(|| wav_duration_ms(&o.bytes))
                .flatten();
            let asset = self
                .assets
                .save(NewAsset {
                    account_id: self.account_id.clone(),
                    kind: o.kind,
                    mime: o.mime,
                    bytes: o.bytes,
                    width,
                    height,
                    duration_ms,
                })
                .await
                .map_err(store_failed)?;
            assets.push(asset);
        }
        let d = Dispatch {
            backend: self.backend.url().into(),
            backend_job: backend_job.unwrap_or_default(),
            assets: Some(assets.clone()),
        };
        self.assets
            .record_dispatch(&self.task.idempotency_key, &d)
            .await
            .map_err(store_failed)?;
        Ok(assets)
    }
}

/// A PCM WAV's length, from its header.
fn wav_duration_ms(b: &[u8]) -> Option<u64> {
    if b.get(0..4)? != b"RIFF" || b.get(8..12)? != b"WAVE" {
        return None;
    }
    let u32_at = |i: usize| Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?));
    let byte_rate = u64::from(u32_at(28)?);
    // The data chunk follows `fmt ` in the files backends write; its size is at 40.
    let data = u64::from(u32_at(40)?);
    (byte_rate > 0).then(|| data * 1000 / byte_rate)
}

fn store_failed(e: super::store::MediaStoreError) -> BackendError {
    BackendError::unavailable(format!("the media store: {e}"))
}

/// Where one job's events go.
struct Reply {
    bus: Arc<dyn Bus>,
    worker_id: String,
    stream: String,
    job_id: String,
    attempt: u32,
}

impl Reply {
    async fn post(&self, event: WorkerEvent) {
        let sent = protocol::post_to_node(
            self.bus.as_ref(),
            &self.worker_id,
            &self.stream,
            &self.job_id,
            &NodeMessage::Worker {
                attempt: self.attempt,
                event,
            },
        )
        .await;
        protocol::log_undelivered(&self.job_id, &self.stream, sent);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Ended {
    job_id: String,
    cancelled: bool,
}

impl Handler<Ended> for MediaWorkerActor {
    type Result = ();

    fn handle(&mut self, msg: Ended, _: &mut Context<Self>) {
        self.running.remove(&msg.job_id);
        if msg.cancelled {
            self.cancelled += 1;
        } else {
            self.completed += 1;
        }
        self.beat_in_background();
    }
}

impl Handler<GetLoad> for MediaWorkerActor {
    type Result = MessageResult<GetLoad>;

    fn handle(&mut self, _: GetLoad, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.load())
    }
}

impl Handler<SetDraining> for MediaWorkerActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: SetDraining, _: &mut Context<Self>) -> Self::Result {
        self.draining = msg.0;
        let sent = self.beat(false);
        Box::pin(sent.into_actor(self).map(|r, _, _| {
            if let Err(e) = r {
                tracing::warn!("sending a heartbeat: {e}");
            }
        }))
    }
}

impl Handler<Leave> for MediaWorkerActor {
    type Result = ResponseActFuture<Self, Result<(), BusError>>;

    fn handle(&mut self, _: Leave, _: &mut Context<Self>) -> Self::Result {
        self.left = true;
        Box::pin(self.beat(true).into_actor(self))
    }
}
