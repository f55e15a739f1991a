//! The engine on its own OS thread, never on the async executor: jobs go in through a
//! bounded queue, text and the final usage come back on each job's channel.
//!
//! A job stops at once when its cancel flag is set or its receiver is dropped (the client
//! went away), and then reports only the tokens it produced, so billing charges exactly
//! those. Counters in [`EngineStatus`] show what runs, waits and was cancelled.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

use crate::engine::generate::{generate, FinishReason, GenerateParams, Resume};
use crate::engine::tokenizer::Tokenizer;
use crate::engine::{CpuBackend, Model};

/// One generation request.
pub struct Job {
    pub id: String,
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    /// Where another worker left this job, when it continues one.
    pub resume: Resume,
    /// Set by anyone to stop the job; checked after every token.
    pub cancel: Arc<AtomicBool>,
    pub events: UnboundedSender<JobEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobEvent {
    /// New text (never empty) and the tokens produced since the last text.
    Text { text: String, tokens: Vec<u32> },
    /// The job ended; the counts are what was processed and produced.
    Finished { finish: FinishReason, prompt_tokens: usize, completion_tokens: usize },
    /// The engine refused the job (e.g. the prompt does not fit the context).
    Failed(String),
}

/// Live counters of one engine thread.
#[derive(Debug, Default)]
pub struct EngineStatus {
    pub queued: AtomicUsize,
    pub running: AtomicUsize,
    pub completed: AtomicUsize,
    pub cancelled: AtomicUsize,
    /// KV-cache positions the running job uses.
    pub kv_used: AtomicUsize,
    /// Decode speed of the last finished job (f32 bits), tokens per second.
    tokens_per_s: AtomicU32,
}

impl EngineStatus {
    /// Decode speed measured on the last job that decoded (0 before any).
    pub fn tokens_per_s(&self) -> f32 {
        f32::from_bits(self.tokens_per_s.load(Ordering::Relaxed))
    }
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

pub struct EngineThread {
    queue: Option<SyncSender<Job>>,
    status: Arc<EngineStatus>,
    handle: Option<JoinHandle<()>>,
}

impl EngineThread {
    /// Starts the thread and returns once the engine is ready (its weights prepared); the
    /// engine's own pool uses `threads` threads in all. At most `max_queue` jobs wait
    /// behind the running one.
    pub fn start(model: Arc<Model>, tokenizer: Arc<Tokenizer>, threads: usize, max_queue: usize) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Job>(max_queue);
        let (ready_tx, ready_rx) = sync_channel::<()>(1);
        let status = Arc::new(EngineStatus::default());
        let st = Arc::clone(&status);
        let handle = std::thread::Builder::new().name("engine".into()).spawn(move || {
            let backend = CpuBackend::new(threads);
            model.prepare(&backend);
            let _ = ready_tx.send(());
            for job in rx {
                st.queued.fetch_sub(1, Ordering::SeqCst);
                st.running.fetch_add(1, Ordering::SeqCst);
                let last = run_job(&model, &backend, &tokenizer, &job, &st);
                // Counters first, so whoever sees the last event sees them updated.
                st.running.fetch_sub(1, Ordering::SeqCst);
                match last {
                    JobEvent::Finished { finish: FinishReason::Cancelled, .. } => st.cancelled.fetch_add(1, Ordering::SeqCst),
                    _ => st.completed.fetch_add(1, Ordering::SeqCst),
                };
                let _ = job.events.send(last);
            }
        })?;
        ready_rx.recv().map_err(|_| std::io::Error::other("the engine thread died while loading"))?;
        Ok(Self { queue: Some(tx), status, handle: Some(handle) })
    }

    /// Queues a job without waiting; a full queue hands the job back.
    pub fn submit(&self, job: Job) -> Result<(), Rejected> {
        let Some(queue) = self.queue.as_ref() else { return Err(Rejected { reason: SubmitError::Stopped, job: Box::new(job) }) };
        self.status.queued.fetch_add(1, Ordering::SeqCst);
        queue.try_send(job).map_err(|e| {
            self.status.queued.fetch_sub(1, Ordering::SeqCst);
            match e {
                TrySendError::Full(job) => Rejected { reason: SubmitError::QueueFull, job: Box::new(job) },
                TrySendError::Disconnected(job) => Rejected { reason: SubmitError::Stopped, job: Box::new(job) },
            }
        })
    }

    pub fn status(&self) -> &EngineStatus {
        &self.status
    }
}

impl Drop for EngineThread {
    /// Finishes the queued jobs, then stops the thread.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Runs one job, streaming its text, and returns its last event (`Finished` or `Failed`).
fn run_job(model: &Model, backend: &CpuBackend, tokenizer: &Tokenizer, job: &Job, st: &EngineStatus) -> JobEvent {
    let stopped = || job.cancel.load(Ordering::SeqCst) || job.events.is_closed();
    if stopped() {
        return JobEvent::Finished { finish: FinishReason::Cancelled, prompt_tokens: 0, completion_tokens: 0 };
    }
    let mut tokens = Vec::new();
    let mut kv = job.prompt.len();
    let result = generate(model, backend, tokenizer, &job.prompt, &job.params, &job.resume, |text, token| {
        kv += 1;
        st.kv_used.store(kv, Ordering::Relaxed);
        tokens.extend(token);
        if !text.is_empty() && job.events.send(JobEvent::Text { text: text.to_string(), tokens: std::mem::take(&mut tokens) }).is_err() || stopped() {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    st.kv_used.store(0, Ordering::Relaxed);
    match result {
        Ok(g) => {
            if g.decode_steps > 0 {
                let speed = g.decode_steps as f32 / g.decode_time.as_secs_f32().max(1e-6);
                st.tokens_per_s.store(speed.to_bits(), Ordering::Relaxed);
            }
            JobEvent::Finished { finish: g.finish, prompt_tokens: job.prompt.len(), completion_tokens: g.token_ids.len() }
        }
        Err(e) => JobEvent::Failed(e.to_string()),
    }
}
