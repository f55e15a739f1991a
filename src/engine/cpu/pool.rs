//! A fixed-size thread pool built for the engine's fork-join pattern: one short parallel
//! region per matmul, a few hundred regions per token.
//!
//! General-purpose pools (rayon, a channel per job) cost several microseconds per region,
//! which adds up to a large fraction of a 5 ms decode step. Here the caller publishes a
//! borrowed closure and bumps an epoch; workers spin briefly on the epoch (so back-to-back
//! regions start in well under a microsecond) and park on a condvar when idle for long, so
//! an idle server burns no CPU. The calling thread takes part as thread 0.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN_FOR: Duration = Duration::from_millis(2);

/// Busy-wait iterations before a waiting thread starts yielding its core at each turn, so
/// that when more threads than cores are runnable (two engines, or tests side by side) the
/// ones with work get to run.
const PURE_SPINS: u32 = 4096;

/// One turn of a wait loop: a pause instruction at first, then yielding the core.
#[inline]
fn wait_turn(spins: &mut u32) {
    if *spins < PURE_SPINS {
        *spins += 1;
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

type Job<'a> = &'a (dyn Fn(usize) + Sync);

struct Shared {
    /// Points at a `Job` on the stack of the thread inside `run`, valid while workers run it.
    job: AtomicPtr<Job<'static>>,
    epoch: AtomicUsize,
    remaining: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

pub struct ThreadPool {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
    n_threads: usize,
    /// Serialises `run` calls from different threads.
    run_lock: Mutex<()>,
}

impl ThreadPool {
    /// A pool of `n_threads` threads in all, the caller included (`n_threads - 1` spawned).
    pub fn new(n_threads: usize) -> Self {
        let n_threads = n_threads.max(1);
        let shared = Arc::new(Shared {
            job: AtomicPtr::new(std::ptr::null_mut()),
            epoch: AtomicUsize::new(0),
            remaining: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let handles = (1..n_threads)
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("engine-{i}"))
                    .spawn(move || worker(&shared, i))
                    .expect("spawning an engine thread")
            })
            .collect();
        Self {
            shared,
            handles,
            n_threads,
            run_lock: Mutex::new(()),
        }
    }

    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Runs `f(thread_index)` once on every thread of the pool and returns when all are done.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.n_threads == 1 {
            f(0);
            return;
        }
        let _serial = crate::locks::lock(&self.run_lock);
        let s = &*self.shared;
        let job: Job<'_> = f;
        // SAFETY: the pointer is only dereferenced by workers between the epoch bump below
        // and their decrement of `remaining`; we do not return before `remaining` is zero,
        // so `job` outlives every use.
        let ptr = &job as *const Job<'_> as *mut Job<'static>;
        s.job.store(ptr, Ordering::SeqCst);
        s.remaining.store(self.n_threads - 1, Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = crate::locks::lock(&s.lock);
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
        let mut spins = 0;
        while s.remaining.load(Ordering::Acquire) != 0 {
            wait_turn(&mut spins);
        }
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::SeqCst) {
            panic!("an engine thread panicked");
        }
    }

    /// Splits `0..n` into chunks of `chunk` (each starting at a multiple of `chunk`) and
    /// runs each once. Thread `i` first works through its own contiguous share, front to
    /// back, so its reads form one long stream the prefetcher can follow; a thread that
    /// finishes early takes the remaining chunks of the others' shares.
    pub fn for_chunks(&self, n: usize, chunk: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
        let chunk = chunk.max(1);
        if self.n_threads == 1 || n <= chunk {
            f(0..n);
            return;
        }
        let n_chunks = n.div_ceil(chunk);
        let parts = self.n_threads;
        let bound = |p: usize| p * n_chunks / parts;
        let next: Vec<AtomicUsize> = (0..parts).map(|p| AtomicUsize::new(bound(p))).collect();
        self.run(&|i| {
            for p in (0..parts).map(|k| (i + k) % parts) {
                loop {
                    let c = next[p].fetch_add(1, Ordering::Relaxed);
                    if c >= bound(p + 1) {
                        break;
                    }
                    f(c * chunk..((c + 1) * chunk).min(n));
                }
            }
        });
    }
}

fn worker(s: &Shared, index: usize) {
    let mut seen = 0usize;
    loop {
        let started = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.shutdown.load(Ordering::Acquire) {
                return;
            }
            let e = s.epoch.load(Ordering::SeqCst);
            if e != seen {
                seen = e;
                break;
            }
            if spins < PURE_SPINS || started.elapsed() < SPIN_FOR {
                wait_turn(&mut spins);
                continue;
            }
            let mut g = crate::locks::lock(&s.lock);
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            while s.epoch.load(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::SeqCst) {
                g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        let ptr = s.job.load(Ordering::SeqCst);
        // SAFETY: see `ThreadPool::run`: the job stays alive until we decrement `remaining`.
        let job = unsafe { &*ptr };
        if catch_unwind(AssertUnwindSafe(|| job(index))).is_err() {
            s.panicked.store(true, Ordering::SeqCst);
        }
        s.remaining.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _g = crate::locks::lock(&self.shared.lock);
            self.shared.wake.notify_all();
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_runs_once_per_region() {
        let pool = ThreadPool::new(3);
        for _ in 0..1000 {
            let hits = [
                AtomicUsize::new(0),
                AtomicUsize::new(0),
                AtomicUsize::new(0),
            ];
            pool.run(&|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn chunks_cover_the_range_exactly_once() {
        let pool = ThreadPool::new(2);
        let seen: Vec<AtomicUsize> = (0..1000).map(|_| AtomicUsize::new(0)).collect();
        pool.for_chunks(1000, 7, &|r| {
            for i in r {
                seen[i].fetch_add(1, Ordering::Relaxed);
            }
        });
        assert!(seen.iter().all(|s| s.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn a_panicking_job_is_reported_not_hung() {
        let pool = ThreadPool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| pool.run(&|i| assert!(i == 0, "boom"))));
        assert!(r.is_err());
        // The pool still works afterwards.
        let n = AtomicUsize::new(0);
        pool.run(&|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 2);
    }
}
