//! What each front does for durable runs in the background, in one loop: tell its executors
//! of cancels asked for on any front, renew their leases (an executor whose lease another
//! front took is told to stop), adopt runs that need an executor and whose lease ended (their
//! front died; a workflow to the workflow executor), and delete runs that ended longer ago
//! than the retention period.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{blocking, executor, Signal};
use crate::session::Services;

/// How often cancels are looked for: a cancel reaches its executor within this.
const TICK: Duration = Duration::from_millis(200);
/// How often runs without a live executor are looked for.
const ADOPT_EVERY: Duration = Duration::from_secs(1);
const RETIRE_EVERY: Duration = Duration::from_secs(60);
/// Runs adopted or deleted per look.
const BATCH: usize = 100;

/// Starts the loop for this front's runs.
pub fn start(services: Arc<Services>) {
    actix::spawn(async move {
        let lease = Duration::from_secs(services.runs.config.lease_secs);
        let (mut renewed, mut adopted, mut retired) =
            (Instant::now(), Instant::now(), None::<Instant>);
        loop {
            tokio::time::sleep(TICK).await;
            relay_cancels(&services).await;
            if renewed.elapsed() >= lease / 3 {
                renewed = Instant::now();
                renew(&services).await;
            }
            if adopted.elapsed() >= ADOPT_EVERY {
                adopted = Instant::now();
                adopt(&services).await;
            }
            if retired.is_none_or(|t| t.elapsed() >= RETIRE_EVERY) {
                retired = Some(Instant::now());
                retire(&services).await;
            }
        }
    });
}

async fn relay_cancels(services: &Arc<Services>) {
    let runs = Arc::clone(&services.runs);
    let executing = runs.executing();
    if executing.is_empty() {
        return;
    }
    let log = Arc::clone(&runs.log);
    let cancels = blocking(move || {
        let mut out = Vec::new();
        for run in executing {
            if let Some(reason) = log.cancel_requested(&run)? {
                out.push((run, reason));
            }
        }
        Ok(out)
    })
    .await;
    match cancels {
        Ok(c) => {
            for (run, reason) in c {
                runs.signal(&run, Signal::Cancel(reason));
            }
        }
        Err(e) => tracing::warn!(error = %e, "looking for cancelled runs"),
    }
}

async fn renew(services: &Arc<Services>) {
    let runs = Arc::clone(&services.runs);
    let executing = runs.executing();
    if executing.is_empty() {
        return;
    }
    let (log, owner, until) = (
        Arc::clone(&runs.log),
        runs.owner.clone(),
        runs.lease_until(crate::clock::unix_ms()),
    );
    let now = crate::clock::unix_ms();
    let lost = blocking(move || {
        let mut lost = Vec::new();
        for run in executing {
            if log.claim(&run, &owner, now, until)?.is_none() {
                lost.push(run);
            }
        }
        Ok(lost)
    })
    .await;
    match lost {
        Ok(lost) => {
            for run in lost {
                tracing::warn!(run = %run, "another front took over this run");
                runs.signal(&run, Signal::Lost);
            }
        }
        Err(e) => tracing::warn!(error = %e, "renewing run leases"),
    }
}

async fn adopt(services: &Arc<Services>) {
    let runs = Arc::clone(&services.runs);
    let (log, owner) = (Arc::clone(&runs.log), runs.owner.clone());
    let now = crate::clock::unix_ms();
    let until = runs.lease_until(now);
    let adopted = blocking(move || {
        let mut adopted = Vec::new();
        for run in log.orphans(now, BATCH)? {
            if log.claim(&run, &owner, now, until)?.is_some() {
                adopted.push(run);
            }
        }
        Ok(adopted)
    })
    .await;
    match adopted {
        Ok(adopted) => {
            for run in adopted {
                tracing::info!(run = %run, "adopting a run whose executor stopped");
                let why = Some("executor_lease_expired".into());
                if crate::workflows::is_workflow(&run) {
                    crate::workflows::executor::execute(Arc::clone(services), run, why);
                } else {
                    executor::execute(Arc::clone(services), run, why);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "looking for runs without an executor"),
    }
}

async fn retire(services: &Arc<Services>) {
    let runs = &services.runs;
    let log = Arc::clone(&runs.log);
    let before = crate::clock::unix_ms().saturating_sub(runs.config.retention_secs * 1000);
    let r = blocking(move || {
        let old = log.ended_before(before, BATCH)?;
        for run in &old {
            log.delete(run)?;
        }
        Ok(old.len())
    })
    .await;
    match r {
        Ok(0) => {}
        Ok(n) => tracing::info!(runs = n, "deleted runs past their retention"),
        Err(e) => tracing::warn!(error = %e, "deleting old runs"),
    }
}
