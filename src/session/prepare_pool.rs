//! The threads that parse request bodies and render, tokenize and compile prompts.
//!
//! That work is CPU-bound and grows with the body (a 25 MiB message takes seconds to
//! tokenize). On the HTTP threads it would stall every connection those threads serve,
//! `/healthz` included, so the front hands it here: a fixed set of threads behind a bounded
//! queue, at a lower scheduling priority than the rest of the process, so that when they
//! fill every core the threads that answer HTTP and relay tokens still run first. When the
//! queue is full the request gets a 503 with `Retry-After` at once instead of waiting
//! behind work it cannot overtake.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use crate::api::error::ApiError;

type Job = Box<dyn FnOnce() + Send>;

pub struct PreparePool {
    jobs: SyncSender<Job>,
}

impl PreparePool {
    /// `threads` threads (one per core when 0) and room for `queue` waiting jobs per thread.
    pub fn new(threads: usize, queue: usize) -> std::io::Result<Self> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let (jobs, rx) = sync_channel::<Job>(threads * queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("prepare-{i}"))
                .spawn(move || {
                    yield_to_the_rest();
                    work(&rx)
                })?;
        }
        Ok(Self { jobs })
    }

    /// Runs `f` on a pool thread and waits for its result without blocking this thread.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // The client may have gone; then nobody wants the result.
            let _ = tx.send(f());
        });
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => {
                ApiError::busy("The server is preparing too many requests; retry shortly")
            }
            TrySendError::Disconnected(_) => {
                ApiError::logged("preparing the request", "the prepare threads are gone")
            }
        })?;
        rx.await.map_err(|_| {
            ApiError::logged("preparing the request", "the work panicked (see the log)")
        })?
    }
}

/// The niceness of the prepare threads: the kernel gives a nice-0 thread about nine times
/// their share of a contended core.
const NICENESS: i32 = 10;

/// Lowers the calling thread's scheduling priority (on Linux, niceness is per thread).
fn yield_to_the_rest() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority only reads its arguments; `0` names the calling thread.
        let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICENESS) };
        if r != 0 {
            tracing::debug!("could not lower the prepare thread's priority");
        }
    }
}

/// One pool thread: takes jobs until the pool is dropped. A job that panics is logged and
/// its caller gets a 500; the thread goes on.
fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else { return };
        if catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!("preparing a request panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix::test]
    async fn runs_jobs_off_the_caller_and_refuses_when_full() {
        let pool = PreparePool::new(1, 1).expect("threads");
        let caller = std::thread::current().id();
        let ran_on = pool
            .run(|| Ok(std::thread::current().id()))
            .await
            .expect("runs");
        assert_ne!(ran_on, caller);
        let e = pool
            .run::<()>(|| panic!("a bad job"))
            .await
            .expect_err("a panic is an error");
        assert_eq!(e.status, 500);
        assert_eq!(pool.run(|| Ok(7)).await, Ok(7), "the thread survived");

        // One job holds the only thread, one waits in the queue, the next is refused.
        let (started, on_start) = std::sync::mpsc::channel::<()>();
        let (hold, wait) = std::sync::mpsc::channel::<()>();
        let pool = std::rc::Rc::new(pool);
        let p = std::rc::Rc::clone(&pool);
        let blocked = actix::spawn(async move {
            p.run(move || {
                let _ = started.send(());
                let _ = wait.recv();
                Ok(())
            })
            .await
        });
        actix::clock::sleep(std::time::Duration::from_millis(1)).await;
        on_start.recv().expect("the first job started");
        let p = std::rc::Rc::clone(&pool);
        let queued = actix::spawn(async move { p.run(|| Ok(())).await });
        actix::clock::sleep(std::time::Duration::from_millis(1)).await;
        let refused = pool.run(|| Ok(())).await;
        assert_eq!(refused.expect_err("the queue is full").status, 503);
        drop(hold);
        assert!(blocked.await.expect("joins").is_ok());
        assert!(queued.await.expect("joins").is_ok());
    }
}
