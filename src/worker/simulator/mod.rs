//! The worker simulator: a [`JobRunner`] with no model and no engine, for load-testing the
//! control plane (fronts, the bus, coordinators) at pool sizes no machine could host.
//!
//! A job waits for one of `max_batch` slots (jobs beyond it queue, up to the capacity), then
//! for the prefill latency, then streams placeholder tokens at `tokens_per_s` on an absolute
//! schedule (a late tick does not push the later ones back), each delay scaled by a random
//! factor in `1 ± jitter`. It ends at the job's `max_tokens` (finish `length`), or at
//! `max_output` tokens (finish `stop`), or when cancelled, and reports exact counts like the
//! engine. A job resumed after failover produces only the tokens still owed.
//!
//! Simulated workers say so when they register ([`crate::worker::actor::WorkerInfo`]'s
//! `simulated`); coordinators place nothing on them unless started with
//! `--allow-simulated`. [`card`] is the made-up model they serve.

pub mod card;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::engine_thread::{EngineStatus, Job, JobEvent, JobRunner, Rejected, SubmitError};
use crate::engine::batch::BatchStats;
use crate::engine::generate::FinishReason;
use crate::engine::kv::BLOCK;

/// How a simulated worker behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimSettings {
    /// Tokens per second of each sequence.
    pub tokens_per_s: f64,
    /// Time from taking a job (a free slot) to its first token.
    pub prefill: Duration,
    /// Each delay is scaled by a factor drawn uniformly from `1 ± jitter` (0 to 1).
    pub jitter: f64,
    /// Sequences that run at once.
    pub max_batch: usize,
    /// Jobs that may wait beyond a full batch.
    pub max_queue: usize,
    /// Tokens a job produces at most, whatever its `max_tokens`.
    pub max_output: usize,
}

pub struct Simulator {
    settings: SimSettings,
    status: Arc<EngineStatus>,
    slots: Arc<Semaphore>,
    seed: AtomicU64,
}

impl Simulator {
    pub fn new(settings: SimSettings, seed: u64) -> Self {
        let status = Arc::new(EngineStatus::default());
        let kv_blocks_total = settings.max_batch * card::CONTEXT / BLOCK;
        status.update_batch(|b| {
            *b = BatchStats {
                kv_blocks_total,
                ..BatchStats::default()
            }
        });
        Self {
            settings,
            status,
            slots: Arc::new(Semaphore::new(settings.max_batch.max(1))),
            seed: AtomicU64::new(seed),
        }
    }

    pub fn max_batch(&self) -> usize {
        self.settings.max_batch
    }
}

impl JobRunner for Simulator {
    fn submit(&self, job: Job) -> Result<(), Rejected> {
        if !self.status.admit(self.capacity()) {
            return Err(Rejected {
                reason: SubmitError::QueueFull,
                job: Box::new(job),
            });
        }
        let rng = Jitter::new(
            self.seed
                .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed),
            self.settings.jitter,
        );
        let run = Run {
            settings: self.settings,
            status: Arc::clone(&self.status),
            rng,
        };
        actix::spawn(run.job(job, Arc::clone(&self.slots)));
        Ok(())
    }

    fn status(&self) -> &EngineStatus {
        &self.status
    }

    fn capacity(&self) -> usize {
        self.settings.max_batch.max(1) + self.settings.max_queue
    }

    fn context(&self) -> usize {
        card::CONTEXT
    }
}

/// Words the placeholder tokens spell.
const WORDS: [&str; 8] = [
    " lorem", " ipsum", " dolor", " sit", " amet", " sed", " do", " magna",
];

/// One simulated job.
struct Run {
    settings: SimSettings,
    status: Arc<EngineStatus>,
    rng: Jitter,
}

impl Run {
    async fn job(mut self, job: Job, slots: Arc<Semaphore>) {
        let stopped = |job: &Job| job.cancel.load(Ordering::SeqCst) || job.events.is_closed();
        // The semaphore is never closed, so a permit always comes.
        let Ok(_slot) = slots.acquire_owned().await else {
            return self.end(&job, FinishReason::Cancelled, 0);
        };
        let blocks = job.prompt.len().div_ceil(BLOCK);
        self.running(1, blocks as isize);
        let owed = job.params.max_tokens.min(self.settings.max_output);
        let mut produced = job.resume.tokens.len();
        let interval = 1.0 / self.settings.tokens_per_s.max(1e-3);
        let mut at = Instant::now() + self.rng.scale(self.settings.prefill.as_secs_f64());
        let finish = loop {
            // The timer has millisecond ticks and rounds up: a token already due goes now.
            if at > Instant::now() {
                tokio::time::sleep_until(at).await;
            }
            if stopped(&job) {
                break FinishReason::Cancelled;
            }
            if produced >= owed {
                break if owed == job.params.max_tokens {
                    FinishReason::Length
                } else {
                    FinishReason::Stop
                };
            }
            let word = WORDS[produced % WORDS.len()];
            let _ = job.events.send(JobEvent::Text {
                text: word.into(),
                tokens: vec![u32::from(word.as_bytes()[1])],
                logprobs: Vec::new(),
            });
            produced += 1;
            self.status.update_batch(|b| b.tokens_generated += 1);
            at += self.rng.scale(interval);
        };
        self.running(-1, -(blocks as isize));
        self.end(&job, finish, produced);
    }

    /// Counts a job in or out of the running batch.
    fn running(&self, jobs: isize, blocks: isize) {
        self.status.update_batch(|b| {
            b.running = b.running.saturating_add_signed(jobs);
            b.kv_blocks_used = b.kv_blocks_used.saturating_add_signed(blocks);
        });
        let running = self.status.running() as f64;
        self.status
            .set_tokens_per_s((running * self.settings.tokens_per_s) as f32);
    }

    fn end(&self, job: &Job, finish: FinishReason, produced: usize) {
        self.status.release(Some(finish));
        let _ = job.events.send(JobEvent::Finished {
            finish,
            prompt_tokens: job.prompt.len(),
            completion_tokens: produced,
        });
    }
}

/// Delay factors in `1 ± jitter` (SplitMix64: cheap, and no two jobs share a sequence).
struct Jitter {
    state: u64,
    amount: f64,
}

impl Jitter {
    fn new(seed: u64, amount: f64) -> Self {
        Self {
            state: seed,
            amount: amount.clamp(0.0, 1.0),
        }
    }

    fn scale(&mut self, seconds: f64) -> Duration {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let unit = (z ^ (z >> 31)) as f64 / u64::MAX as f64;
        Duration::from_secs_f64((seconds * (1.0 + self.amount * (2.0 * unit - 1.0))).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use tokio::sync::mpsc::unbounded_channel;

    use super::*;
    use crate::engine::generate::{GenerateParams, Resume};
    use crate::engine::sampler::SamplerParams;

    fn settings() -> SimSettings {
        SimSettings {
            tokens_per_s: 200.0,
            prefill: Duration::from_millis(30),
            jitter: 0.0,
            max_batch: 2,
            max_queue: 1,
            max_output: 1000,
        }
    }

    fn job(
        max_tokens: usize,
        resume: usize,
    ) -> (Job, tokio::sync::mpsc::UnboundedReceiver<JobEvent>) {
        let (tx, rx) = unbounded_channel();
        let params = GenerateParams {
            max_tokens,
            sampler: SamplerParams::default(),
            stop: Vec::new(),
            grammar: None,
            logprobs: None,
            logit_bias: Vec::new(),
        };
        let resume = Resume {
            tokens: vec![1; resume],
            text_bytes: 0,
        };
        (
            Job {
                id: "j".into(),
                prompt: vec![1; 40],
                params,
                resume,
                images: Vec::new(),
                cancel: Arc::new(AtomicBool::new(false)),
                events: tx,
            },
            rx,
        )
    }

    async fn drain(mut rx: tokio::sync::mpsc::UnboundedReceiver<JobEvent>) -> (usize, JobEvent) {
        let mut texts = 0;
        loop {
            match rx.recv().await {
                Some(JobEvent::Text { .. }) => texts += 1,
                Some(last) => return (texts, last),
                None => panic!("no last event"),
            }
        }
    }

    /// Timing, counts, capacity and resume, on a real clock.
    #[actix::test]
    async fn jobs_stream_at_the_configured_pace() {
        let sim = Simulator::new(settings(), 1);
        let start = std::time::Instant::now();
        let (a, rx) = job(10, 0);
        sim.submit(a).unwrap();
        let (texts, last) = drain(rx).await;
        let took = start.elapsed();
        assert_eq!(texts, 10);
        assert_eq!(
            last,
            JobEvent::Finished {
                finish: FinishReason::Length,
                prompt_tokens: 40,
                completion_tokens: 10
            }
        );
        // 30 ms of prefill, then 9 gaps of 5 ms.
        assert!(
            took >= Duration::from_millis(75) && took < Duration::from_millis(300),
            "{took:?}"
        );
        assert_eq!(
            (sim.status().completed(), sim.status().batch().running),
            (1, 0)
        );

        // Capacity: two run, one waits, the fourth is refused.
        let rxs: Vec<_> = (0..3)
            .map(|_| job(5, 0))
            .map(|(j, rx)| (sim.submit(j).unwrap(), rx).1)
            .collect();
        let (d, _) = job(5, 0);
        assert_eq!(sim.submit(d).unwrap_err().reason, SubmitError::QueueFull);
        for rx in rxs {
            assert_eq!(drain(rx).await.0, 5);
        }

        // A resumed job owes only the rest; max_output ends it with `stop`.
        let (r, rx) = job(10, 7);
        sim.submit(r).unwrap();
        assert_eq!(drain(rx).await.0, 3);
        let short = Simulator::new(
            SimSettings {
                max_output: 4,
                ..settings()
            },
            2,
        );
        let (s, rx) = job(10, 0);
        short.submit(s).unwrap();
        let (texts, last) = drain(rx).await;
        assert_eq!(texts, 4);
        assert!(matches!(
            last,
            JobEvent::Finished {
                finish: FinishReason::Stop,
                completion_tokens: 4,
                ..
            }
        ));
    }

    #[actix::test]
    async fn a_cancelled_job_reports_what_it_produced() {
        let sim = Simulator::new(
            SimSettings {
                tokens_per_s: 50.0,
                prefill: Duration::ZERO,
                ..settings()
            },
            3,
        );
        let (j, mut rx) = job(1000, 0);
        let cancel = Arc::clone(&j.cancel);
        sim.submit(j).unwrap();
        assert!(matches!(rx.recv().await, Some(JobEvent::Text { .. })));
        cancel.store(true, Ordering::SeqCst);
        let (texts, last) = drain(rx).await;
        let JobEvent::Finished {
            finish: FinishReason::Cancelled,
            completion_tokens,
            ..
        } = last
        else {
            panic!("{last:?}")
        };
        assert_eq!(completion_tokens, texts + 1);
        assert_eq!(sim.status().cancelled(), 1);
    }

    #[test]
    fn jitter_stays_in_its_band() {
        let mut j = Jitter::new(9, 0.25);
        let v: Vec<f64> = (0..10_000).map(|_| j.scale(1.0).as_secs_f64()).collect();
        assert!(v.iter().all(|x| (0.75..=1.25).contains(x)));
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert!((mean - 1.0).abs() < 0.01, "{mean}");
        assert_eq!(Jitter::new(1, 0.0).scale(0.5), Duration::from_millis(500));
    }
}
