//! The placement rules, as plain code: no I/O, no clock of its own, no actor. The
//! [`CoordinatorActor`](super::CoordinatorActor) feeds it [`Event`]s (a heartbeat, a
//! placement request, a withdrawal, a tick) with the time, and carries out the
//! [`Action`]s it returns (send the job to a worker, tell a session it waits or is refused,
//! tell a session its worker died). Both `supernet serve` and the cluster run it.
//!
//! The rules:
//! - A job goes to a live, undrained worker of its kind and model, not in its `exclude`
//!   list, with room (jobs held, plus jobs just placed that its heartbeats do not show yet,
//!   below its capacity). The least loaded wins: jobs held, then the share of its KV cache
//!   in use. A worker that recently took the same prompt prefix keeps it while it is at
//!   most one job busier (its caches are warm).
//! - A job that finds no room waits. Waiting jobs are placed by tier priority, then by how
//!   few jobs their account has in flight (fairness), then in arrival order. The queue is
//!   bounded: beyond [`Settings::max_queue`] a job that cannot be placed at once is refused
//!   as busy (the session answers 429).
//! - A first attempt for a model no worker serves is refused (503); a later attempt (its
//!   worker died) waits for one.
//! - A worker silent for [`Settings::dead_after`] is dead: every job it held or was just
//!   given is reported lost, so its session moves it. Silence while the bus itself was
//!   failing does not count.
//! - Simulated workers are ignored unless [`Settings::allow_simulated`].

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::protocol::{
    Heartbeat, JobRef, JobSpec, PlaceRequest, QueueReason, WorkerInfo, WorkerKind, WorkerLoad,
};

#[derive(Debug, Clone)]
pub struct Settings {
    /// Silence after which a worker is declared dead.
    pub dead_after: Duration,
    /// Jobs one account may have in flight at once (0: no limit).
    pub max_jobs_per_account: usize,
    /// Place jobs on simulated workers too (load tests of the control plane); otherwise
    /// their heartbeats are ignored and they never get a job.
    pub allow_simulated: bool,
    /// Jobs that may wait at once; beyond, a job that finds no room is refused as busy.
    pub max_queue: usize,
}

/// How long a placement counts against a worker before its heartbeats must show the job.
pub const PLACED_GRACE: Duration = Duration::from_secs(2);
/// How long a prefix keeps its worker.
pub const AFFINITY_TTL: Duration = Duration::from_secs(300);

/// What happened. `T` is the caller's ticket for a request (its bus delivery and trace),
/// handed back in the actions about that request.
#[derive(Debug)]
pub enum Event<T> {
    /// A worker's heartbeat, `age` after it was sent.
    Heartbeat {
        beat: Heartbeat,
        age: Duration,
    },
    Request {
        ticket: T,
        request: PlaceRequest,
    },
    /// A session gave up on its waiting job.
    Withdraw {
        job_id: String,
    },
    /// Time passed: bury the dead, retry the queue.
    Tick,
    /// The bus failed just now: silence from now on is not the workers' fault.
    Trouble,
}

/// What to do.
#[derive(Debug, PartialEq)]
pub enum Action<T> {
    /// Send `job` to the worker and tell its session where it went.
    Place {
        ticket: T,
        worker_id: String,
        job: Box<JobSpec>,
    },
    /// Tell the job's session why it waits (once per reason); the job stays queued.
    Wait {
        ticket: T,
        job: JobRef,
        reason: QueueReason,
    },
    /// Tell the job's session it cannot be placed (`busy`: the queue is full).
    Refuse {
        ticket: T,
        job: JobRef,
        busy: bool,
        reason: String,
    },
    /// The worker died: tell the session of each job it held, which moves the job.
    Dead {
        worker_id: String,
        jobs: Vec<JobRef>,
    },
    /// The session withdrew its waiting job: tell it the job is out of the queue.
    Withdrawn { ticket: T, job: JobRef },
    /// Nothing to tell anyone (a duplicate request): just acknowledge.
    Drop(T),
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

    fn busy(&self) -> u64 {
        self.load.busy() + self.placed.len() as u64
    }

    fn has_room(&self) -> bool {
        self.busy() < self.load.capacity
    }

    /// Lower is less loaded: jobs held, then the share of the KV cache in use.
    fn score(&self) -> f64 {
        self.busy() as f64 + self.load.kv_used as f64 / self.info.kv_capacity.max(1) as f64
    }

    fn serves(&self, request: &PlaceRequest) -> bool {
        self.info.serves(request.kind, &request.job.model)
            && !self.load.draining
            && !request.exclude.contains(&self.info.worker_id)
    }
}

struct Waiting<T> {
    ticket: T,
    request: PlaceRequest,
    arrived: u64,
    told: Option<QueueReason>,
}

/// Where a waiting job stands after one try. Short-lived, moved once: its size does not
/// matter, and boxing the waiting job would allocate on every try.
#[allow(clippy::large_enum_variant)]
enum Outcome<T> {
    Placed(Action<T>),
    Refused(Action<T>),
    Waits(Waiting<T>, QueueReason),
}

pub struct Placer<T> {
    settings: Settings,
    workers: HashMap<String, Tracked>,
    queue: Vec<Waiting<T>>,
    arrivals: u64,
    affinity: HashMap<(String, u64), (String, Instant)>,
    /// When the bus last failed: silence since then is not a worker's fault.
    trouble: Option<Instant>,
    /// Simulated workers ignored, each reported once.
    ignored: HashSet<String>,
}

impl<T: Clone> Placer<T> {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            workers: HashMap::new(),
            queue: Vec::new(),
            arrivals: 0,
            affinity: HashMap::new(),
            trouble: None,
            ignored: HashSet::new(),
        }
    }

    pub fn handle(&mut self, event: Event<T>, now: Instant) -> Vec<Action<T>> {
        let mut out = Vec::new();
        match event {
            Event::Heartbeat { beat, age } => {
                if self.beat(beat, age, now) && !self.queue.is_empty() {
                    self.drain(now, &mut out);
                }
            }
            Event::Request { ticket, request } => self.request(ticket, request, now, &mut out),
            Event::Withdraw { job_id } => {
                let (gone, kept) = std::mem::take(&mut self.queue)
                    .into_iter()
                    .partition(|w| w.request.job.job_id == job_id);
                self.queue = kept;
                out.extend(gone.into_iter().map(|w: Waiting<T>| Action::Withdrawn {
                    job: w.request.job.job_ref(),
                    ticket: w.ticket,
                }));
            }
            Event::Tick => {
                self.bury_the_dead(now, &mut out);
                self.affinity
                    .retain(|_, (_, at)| now.duration_since(*at) < AFFINITY_TTL);
                self.drain(now, &mut out);
            }
            Event::Trouble => self.trouble = Some(now),
        }
        out
    }

    /// Every live worker with its load, as heartbeats report them.
    pub fn pool(&self) -> Vec<(WorkerInfo, WorkerLoad)> {
        let mut pool: Vec<_> = self
            .workers
            .values()
            .map(|w| (w.info.clone(), w.load.clone()))
            .collect();
        pool.sort_by(|a, b| a.0.worker_id.cmp(&b.0.worker_id));
        pool
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Forgets every waiting job (leadership was lost: the requests stay pending on the bus
    /// for the next leader).
    pub fn abandon_queue(&mut self) {
        self.queue.clear();
    }

    /// Records a heartbeat; true if it may let a waiting job in (the worker left, which
    /// may leave jobs no worker, or it has room).
    fn beat(&mut self, hb: Heartbeat, age: Duration, now: Instant) -> bool {
        if age > self.settings.dead_after {
            return false;
        }
        let id = hb.info.worker_id.clone();
        if hb.info.simulated && !self.settings.allow_simulated {
            if self.ignored.insert(id.clone()) {
                tracing::warn!(worker = %id, "ignoring a simulated worker: this coordinator was not started with --allow-simulated");
            }
            return false;
        }
        if hb.leaving {
            if self.workers.remove(&id).is_some() {
                tracing::info!(worker = %id, "worker left");
            }
            return true;
        }
        match self.workers.get_mut(&id) {
            Some(w) => {
                w.placed.retain(|job, (at, _)| {
                    now.duration_since(*at) < PLACED_GRACE
                        && !hb.received.contains(job)
                        && !hb.load.jobs.iter().any(|j| &j.job_id == job)
                });
                (w.info, w.load, w.seen) = (hb.info, hb.load, now);
                w.has_room()
            }
            None => {
                tracing::info!(worker = %id, kind = hb.info.kind.as_str(), model = %hb.info.model_id, capacity = hb.load.capacity, "worker joined");
                self.workers.insert(
                    id,
                    Tracked {
                        info: hb.info,
                        load: hb.load,
                        seen: now,
                        placed: HashMap::new(),
                    },
                );
                true
            }
        }
    }

    fn request(
        &mut self,
        ticket: T,
        request: PlaceRequest,
        now: Instant,
        out: &mut Vec<Action<T>>,
    ) {
        let job = &request.job;
        if self
            .queue
            .iter()
            .any(|w| w.request.job.job_id == job.job_id && w.request.job.attempt >= job.attempt)
        {
            out.push(Action::Drop(ticket));
            return;
        }
        // A job that moves off a dead worker was admitted long ago: it always may wait.
        let room_to_wait = self.queue.len() < self.settings.max_queue || job.attempt > 0;
        let behind = self
            .queue
            .iter()
            .any(|w| w.request.kind == request.kind && w.request.job.model == job.model);
        self.arrivals += 1;
        let waiting = Waiting {
            ticket,
            request,
            arrived: self.arrivals,
            told: None,
        };
        if behind {
            // Jobs of its model wait already: it takes its turn among them.
            if !room_to_wait {
                return out.push(self.queue_full(waiting));
            }
            self.queue.push(waiting);
            return self.drain(now, out);
        }
        match self.try_place(waiting, now) {
            Outcome::Placed(a) | Outcome::Refused(a) => out.push(a),
            Outcome::Waits(w, _) if !room_to_wait => out.push(self.queue_full(w)),
            Outcome::Waits(w, reason) => self.wait(w, reason, out),
        }
    }

    fn queue_full(&self, w: Waiting<T>) -> Action<T> {
        Action::Refuse {
            job: w.request.job.job_ref(),
            ticket: w.ticket,
            busy: true,
            reason: format!(
                "{} jobs already wait for a worker, the most this coordinator queues",
                self.queue.len()
            ),
        }
    }

    /// Tries every waiting job in order: priority, then the account's jobs in flight, then
    /// arrival.
    fn drain(&mut self, now: Instant, out: &mut Vec<Action<T>>) {
        if self.queue.is_empty() {
            return;
        }
        // Each account's jobs in flight, counted once for the whole queue.
        let mut in_flight: HashMap<&str, usize> = HashMap::new();
        for job in self.workers.values().flat_map(|w| w.jobs()) {
            *in_flight.entry(job.account_id.as_str()).or_default() += 1;
        }
        let mut order: Vec<_> = std::mem::take(&mut self.queue)
            .into_iter()
            .map(|w| {
                let account = w.request.job.account_id.as_str();
                let busy = in_flight.get(account).copied().unwrap_or(0);
                (w.request.priority, busy, w)
            })
            .collect();
        order.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then(a.1.cmp(&b.1))
                .then(a.2.arrived.cmp(&b.2.arrived))
        });
        // Models whose workers are all full: the jobs after the first that found no room wait
        // without looking again (a job with workers to avoid still looks).
        let mut full: HashSet<(WorkerKind, String)> = HashSet::new();
        for (_, _, w) in order {
            let model = (w.request.kind, w.request.job.model.clone());
            let outcome = if w.request.exclude.is_empty() && full.contains(&model) {
                Outcome::Waits(w, QueueReason::Queued)
            } else {
                self.try_place(w, now)
            };
            match outcome {
                Outcome::Waits(w, QueueReason::Queued) if w.request.exclude.is_empty() => {
                    full.insert(model);
                    self.wait(w, QueueReason::Queued, out);
                }
                Outcome::Waits(w, reason) => self.wait(w, reason, out),
                Outcome::Placed(a) | Outcome::Refused(a) => out.push(a),
            }
        }
    }

    /// Puts `w` back in the queue, telling its session why it waits if that changed.
    fn wait(&mut self, mut w: Waiting<T>, reason: QueueReason, out: &mut Vec<Action<T>>) {
        if w.told != Some(reason) {
            w.told = Some(reason);
            out.push(Action::Wait {
                ticket: w.ticket.clone(),
                job: w.request.job.job_ref(),
                reason,
            });
        }
        self.queue.push(w);
    }

    fn try_place(&mut self, w: Waiting<T>, now: Instant) -> Outcome<T> {
        let request = &w.request;
        let serving: Vec<&Tracked> = self
            .workers
            .values()
            .filter(|t| t.serves(request))
            .collect();
        if serving.is_empty() {
            if request.job.attempt > 0 {
                return Outcome::Waits(w, QueueReason::NoWorkers);
            }
            let job = request.job.job_ref();
            let reason = format!("no live worker serves model `{}`", request.job.model);
            return Outcome::Refused(Action::Refuse {
                ticket: w.ticket,
                job,
                busy: false,
                reason,
            });
        }
        let limit = self.settings.max_jobs_per_account;
        if limit > 0 && self.in_flight(&request.job.account_id) >= limit {
            return Outcome::Waits(w, QueueReason::ConcurrencyLimit);
        }
        let free: Vec<&Tracked> = serving.into_iter().filter(|t| t.has_room()).collect();
        let Some(worker_id) = self.choose(&free, &request.job.model, request.prefix, now) else {
            return Outcome::Waits(w, QueueReason::Queued);
        };
        let job = w.request.job;
        if let Some(t) = self.workers.get_mut(&worker_id) {
            t.placed.insert(job.job_id.clone(), (now, job.job_ref()));
        }
        self.affinity.insert(
            (job.model.clone(), w.request.prefix),
            (worker_id.clone(), now),
        );
        Outcome::Placed(Action::Place {
            ticket: w.ticket,
            worker_id,
            job: Box::new(job),
        })
    }

    /// The least loaded worker, or the prefix's recent worker if it is nearly as idle.
    fn choose(&self, free: &[&Tracked], model: &str, prefix: u64, now: Instant) -> Option<String> {
        let best = free.iter().min_by(|a, b| {
            a.score()
                .total_cmp(&b.score())
                .then_with(|| a.info.worker_id.cmp(&b.info.worker_id))
        })?;
        let recent = self
            .affinity
            .get(&(model.to_string(), prefix))
            .filter(|(_, at)| now.duration_since(*at) < AFFINITY_TTL);
        let warm = recent
            .and_then(|(id, _)| free.iter().find(|t| &t.info.worker_id == id))
            .filter(|t| t.busy() <= best.busy() + 1);
        Some(warm.unwrap_or(best).info.worker_id.clone())
    }

    fn in_flight(&self, account: &str) -> usize {
        self.workers
            .values()
            .flat_map(|w| w.jobs())
            .filter(|j| j.account_id == account)
            .count()
    }

    /// Declares silent workers dead and reports their jobs lost.
    fn bury_the_dead(&mut self, now: Instant, out: &mut Vec<Action<T>>) {
        let since = |seen: Instant| self.trouble.map_or(seen, |t| t.max(seen));
        let dead: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                now.saturating_duration_since(since(w.seen)) > self.settings.dead_after
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            let Some(w) = self.workers.remove(&id) else {
                continue;
            };
            let jobs: Vec<JobRef> = w.jobs().cloned().collect();
            tracing::warn!(worker = %id, jobs = jobs.len(), "worker missed its heartbeats; declared dead");
            out.push(Action::Dead {
                worker_id: id,
                jobs,
            });
        }
    }
}

#[cfg(test)]
mod tests;
