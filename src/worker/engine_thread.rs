//! The engine on its own OS thread, never on the async executor: jobs come in over a
//! channel, the batch scheduler ([`crate::engine::batch`]) runs them together, and text and
//! the final usage go back on each job's channel.
//!
//! A job stops at the next step when its cancel flag is set or its receiver is dropped (the
//! client went away), and then reports only the tokens it produced, so billing charges
//! exactly those. [`EngineStatus`] shows what runs and waits, the KV pool, the prefix cache
//! and the batch sizes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

use crate::engine::batch::{BatchConfig, BatchStats, Output, Request, Scheduler, SeqId};
use crate::engine::generate::{FinishReason, GenerateParams, Resume, TokenLogprob};
use crate::engine::tokenizer::Tokenizer;
use crate::engine::vision::tower::VisionTower;
use crate::engine::vision::{self, SeqImages};
use crate::engine::{CpuBackend, EngineError, Model};
use crate::protocol::job::ImageRunSpec;

/// One generation request.
pub struct Job {
    pub id: String,
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    /// Where another worker left this job, when it continues one.
    pub resume: Resume,
    /// The prompt's images (decoded, preprocessed and encoded here, on the engine thread).
    pub images: Vec<ImageInput>,
    /// Set by anyone to stop the job; checked before every step.
    pub cancel: Arc<AtomicBool>,
    pub events: UnboundedSender<JobEvent>,
}

/// One image of a job: the bytes the client sent, and where its rows sit in the prompt.
pub struct ImageInput {
    pub data: Vec<u8>,
    pub runs: Vec<ImageRunSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobEvent {
    /// New text (never empty) and the tokens produced since the last text, with their
    /// log-probabilities when the job asks for them.
    Text {
        text: String,
        tokens: Vec<u32>,
        logprobs: Vec<TokenLogprob>,
    },
    /// The job ended; the counts are what was processed and produced.
    Finished {
        finish: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    /// The engine refused the job (e.g. the prompt does not fit the context).
    Failed(String),
}

/// Live counters of one engine thread.
#[derive(Debug, Default)]
pub struct EngineStatus {
    /// Jobs taken and not finished (waiting, in the channel or the scheduler, or running).
    held: AtomicUsize,
    completed: AtomicUsize,
    cancelled: AtomicUsize,
    /// Aggregate decode speed over the last steps (f32 bits), tokens per second.
    tokens_per_s: AtomicU32,
    /// The scheduler's figures after its last step.
    batch: Mutex<BatchStats>,
}

impl EngineStatus {
    /// The scheduler's figures after its last step.
    pub fn batch(&self) -> BatchStats {
        self.batch.lock().map(|b| b.clone()).unwrap_or_default()
    }

    pub fn running(&self) -> usize {
        self.batch().running
    }

    /// Jobs taken that are not running yet.
    pub fn queued(&self) -> usize {
        self.held
            .load(Ordering::SeqCst)
            .saturating_sub(self.running())
    }

    pub fn completed(&self) -> usize {
        self.completed.load(Ordering::SeqCst)
    }

    pub fn cancelled(&self) -> usize {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Tokens per second summed over the running sequences, smoothed over recent steps (0
    /// before any).
    pub fn tokens_per_s(&self) -> f32 {
        f32::from_bits(self.tokens_per_s.load(Ordering::Relaxed))
    }

    /// Counts a job in if fewer than `capacity` are held.
    pub(super) fn admit(&self, capacity: usize) -> bool {
        if self.held.fetch_add(1, Ordering::SeqCst) >= capacity {
            self.held.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Counts a job out: it ended, or it never reached the engine.
    pub(super) fn release(&self, ended: Option<FinishReason>) {
        self.held.fetch_sub(1, Ordering::SeqCst);
        match ended {
            Some(FinishReason::Cancelled) => self.cancelled.fetch_add(1, Ordering::SeqCst),
            Some(_) => self.completed.fetch_add(1, Ordering::SeqCst),
            None => 0,
        };
    }

    pub(super) fn set_tokens_per_s(&self, v: f32) {
        self.tokens_per_s.store(v.to_bits(), Ordering::Relaxed);
    }

    pub(super) fn update_batch(&self, f: impl FnOnce(&mut BatchStats)) {
        f(&mut crate::locks::lock(&self.batch));
    }
}

/// What runs a worker's jobs: the engine ([`EngineThread`]) or, for load tests of the
/// control plane, the simulator ([`super::simulator::Simulator`]).
pub trait JobRunner {
    /// Takes a job without waiting; a full runner hands the job back.
    fn submit(&self, job: Job) -> Result<(), Rejected>;
    fn status(&self) -> &EngineStatus;
    /// The most jobs it holds at once.
    fn capacity(&self) -> usize;
    /// Positions one sequence may use.
    fn context(&self) -> usize;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the engine queue is full")]
    QueueFull,
    #[error("the engine thread has stopped")]
    Stopped,
}

/// A job the engine did not take, handed back so it can go elsewhere.
#[derive(thiserror::Error)]
#[error("{reason}")]
pub struct Rejected {
    pub reason: SubmitError,
    pub job: Box<Job>,
}

impl std::fmt::Debug for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rejected({:?}, job {})", self.reason, self.job.id)
    }
}

/// How an engine thread runs.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    pub threads: usize,
    pub batch: BatchConfig,
    /// Jobs that may wait beyond a full batch.
    pub max_queue: usize,
}

impl EngineConfig {
    /// The most jobs the engine holds at once.
    pub fn capacity(&self) -> usize {
        self.batch.max_batch.max(1) + self.max_queue
    }
}

pub struct EngineThread {
    queue: Option<Sender<Job>>,
    capacity: usize,
    context: usize,
    status: Arc<EngineStatus>,
    handle: Option<JoinHandle<()>>,
}

impl EngineThread {
    /// Starts the thread and returns once the engine is ready (its weights prepared).
    pub fn start(
        model: Arc<Model>,
        tokenizer: Arc<Tokenizer>,
        tower: Option<Arc<VisionTower>>,
        config: EngineConfig,
    ) -> std::io::Result<Self> {
        let (tx, rx) = channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<usize>(1);
        let status = Arc::new(EngineStatus::default());
        let st = Arc::clone(&status);
        let handle = std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || {
                let backend = CpuBackend::new(config.threads);
                model.prepare(&backend);
                let mut scheduler = Scheduler::new(model, tokenizer, config.batch);
                if let Some(t) = &tower {
                    scheduler = scheduler.with_vision(Arc::clone(t));
                }
                *crate::locks::lock(&st.batch) = scheduler.stats();
                let _ = ready_tx.send(scheduler.context());
                Engine {
                    scheduler,
                    tower,
                    jobs: HashMap::new(),
                    next_id: 0,
                    status: st,
                }
                .run(&backend, &rx);
            })?;
        let context = ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("the engine thread died while loading"))?;
        Ok(Self {
            queue: Some(tx),
            capacity: config.capacity(),
            context,
            status,
            handle: Some(handle),
        })
    }
}

impl JobRunner for EngineThread {
    /// Queues a job without waiting.
    fn submit(&self, job: Job) -> Result<(), Rejected> {
        let Some(queue) = self.queue.as_ref() else {
            return Err(Rejected {
                reason: SubmitError::Stopped,
                job: Box::new(job),
            });
        };
        if !self.status.admit(self.capacity) {
            return Err(Rejected {
                reason: SubmitError::QueueFull,
                job: Box::new(job),
            });
        }
        queue.send(job).map_err(|e| {
            self.status.release(None);
            Rejected {
                reason: SubmitError::Stopped,
                job: Box::new(e.0),
            }
        })
    }

    fn status(&self) -> &EngineStatus {
        &self.status
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    /// The model's context, or the KV pool if smaller.
    fn context(&self) -> usize {
        self.context
    }
}

impl Drop for EngineThread {
    /// Finishes the jobs it holds, then stops the thread.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A job in the scheduler.
struct Live {
    cancel: Arc<AtomicBool>,
    events: UnboundedSender<JobEvent>,
    /// Tokens produced since the last text sent, and their log-probabilities if asked for.
    tokens: Vec<u32>,
    logprobs: Vec<TokenLogprob>,
}

/// The thread's state: the scheduler and where each sequence's events go.
struct Engine {
    scheduler: Scheduler,
    tower: Option<Arc<VisionTower>>,
    jobs: HashMap<SeqId, Live>,
    next_id: SeqId,
    status: Arc<EngineStatus>,
}

impl Engine {
    /// Steps until the channel is closed and every job has finished.
    fn run(mut self, backend: &CpuBackend, rx: &Receiver<Job>) {
        let mut open = true;
        loop {
            if self.scheduler.is_idle() {
                if !open {
                    return;
                }
                match rx.recv() {
                    Ok(job) => self.take(job),
                    Err(_) => return,
                }
            }
            while open {
                match rx.try_recv() {
                    Ok(job) => self.take(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            let stopped: Vec<SeqId> = self
                .jobs
                .iter()
                .filter(|(_, j)| j.cancel.load(Ordering::SeqCst) || j.events.is_closed())
                .map(|(&id, _)| id)
                .collect();
            let cancelled: Vec<Output> = stopped
                .into_iter()
                .filter_map(|id| self.scheduler.cancel(id))
                .collect();
            self.publish(cancelled);
            let t = Instant::now();
            let outputs = self.scheduler.step(backend);
            self.measure(&outputs, t);
            self.publish(outputs);
        }
    }

    /// Updates the status, then delivers `outputs`: whoever sees a job's last event sees
    /// the figures without it.
    fn publish(&mut self, outputs: Vec<Output>) {
        let stats = self.scheduler.stats();
        self.status.update_batch(|b| *b = stats);
        for out in outputs {
            self.deliver(out);
        }
    }

    /// Hands a new job to the scheduler.
    fn take(&mut self, job: Job) {
        let live = Live {
            cancel: job.cancel,
            events: job.events,
            tokens: Vec::new(),
            logprobs: Vec::new(),
        };
        if live.cancel.load(Ordering::SeqCst) || live.events.is_closed() {
            return self.end(
                live,
                JobEvent::Finished {
                    finish: FinishReason::Cancelled,
                    prompt_tokens: 0,
                    completion_tokens: 0,
                },
            );
        }
        self.next_id += 1;
        let id = self.next_id;
        let images = match self.images(&job.images) {
            Ok(im) => im,
            Err(e) => return self.end(live, JobEvent::Failed(e.to_string())),
        };
        match self.scheduler.add(
            id,
            Request {
                prompt: job.prompt,
                params: job.params,
                resume: job.resume,
                images,
            },
        ) {
            Ok(outputs) => {
                self.jobs.insert(id, live);
                outputs.into_iter().for_each(|o| self.deliver(o));
            }
            Err(e) => self.end(live, JobEvent::Failed(e.to_string())),
        }
    }

    /// A job's images decoded and preprocessed for the tower (larger than
    /// [`vision::MAX_SIDE`] downscaled first, as the front sized them).
    fn images(&self, images: &[ImageInput]) -> Result<Option<Box<SeqImages>>, EngineError> {
        if images.is_empty() {
            return Ok(None);
        }
        let tower = self.tower.as_ref().ok_or(EngineError::NoVision)?;
        let c = &tower.config;
        let mut seq = SeqImages {
            spans: vision::spans::ImageSpans {
                runs: Vec::new(),
                mrope: c.mrope(),
            },
            images: Vec::with_capacity(images.len()),
        };
        for (i, im) in images.iter().enumerate() {
            let rgb = vision::preprocess::Rgb::decode(&im.data)
                .map_err(|e| EngineError::Tokenizer(format!("image {i}: {e}")))?;
            let rgb = vision::preprocess::cap(rgb, vision::MAX_SIDE, c);
            seq.images.push(vision::PreparedImage::new(&rgb, c));
            for (part, r) in im.runs.iter().enumerate() {
                seq.spans.runs.push(vision::spans::ImageRun {
                    at: r.at as usize,
                    nx: r.nx as usize,
                    ny: r.ny as usize,
                    image: i,
                    part,
                    rows: None,
                });
            }
        }
        Ok(Some(Box::new(seq)))
    }

    fn deliver(&mut self, out: Output) {
        match out {
            Output::Token {
                id,
                text,
                token,
                logprob,
            } => {
                let Some(live) = self.jobs.get_mut(&id) else {
                    return;
                };
                live.tokens.extend(token);
                live.logprobs.extend(logprob);
                if !text.is_empty() {
                    // A closed channel is seen before the next step, which cancels the job.
                    let _ = live.events.send(JobEvent::Text {
                        text,
                        tokens: std::mem::take(&mut live.tokens),
                        logprobs: std::mem::take(&mut live.logprobs),
                    });
                }
            }
            Output::Failed { id, reason } => {
                if let Some(live) = self.jobs.remove(&id) {
                    self.end(live, JobEvent::Failed(reason));
                }
            }
            Output::Finished {
                id,
                finish,
                prompt_tokens,
                completion_tokens,
            } => {
                if let Some(live) = self.jobs.remove(&id) {
                    self.end(
                        live,
                        JobEvent::Finished {
                            finish,
                            prompt_tokens,
                            completion_tokens,
                        },
                    );
                }
            }
        }
    }

    /// Counts a job out, then sends its last event (so whoever sees it sees the counters).
    fn end(&mut self, live: Live, last: JobEvent) {
        self.status.release(Some(match last {
            JobEvent::Finished { finish, .. } => finish,
            _ => FinishReason::Stop,
        }));
        let _ = live.events.send(last);
    }

    /// Updates the smoothed aggregate decode speed with a step that began at `t`.
    fn measure(&self, outputs: &[Output], t: Instant) {
        let tokens = outputs
            .iter()
            .filter(|o| matches!(o, Output::Token { token: Some(_), .. }))
            .count();
        if tokens == 0 {
            return;
        }
        let now = tokens as f32 / t.elapsed().as_secs_f32().max(1e-6);
        let before = self.status.tokens_per_s();
        let speed = if before == 0.0 {
            now
        } else {
            0.8 * before + 0.2 * now
        };
        self.status.set_tokens_per_s(speed);
    }
}
