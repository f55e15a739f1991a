//! Runs one load level against one endpoint: offers requests in a closed or open loop until
//! the count or the time is up, waits for the ones in flight, and builds the report, with a
//! live progress bar on a terminal.
//!
//! The `n`-th request's body depends only on the seed and `n`, so two endpoints given the
//! same flags get the same requests in the same order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::arrivals::{Load, Poisson};
use crate::client::{send, Outcome};
use crate::mix::Mix;
use crate::report::{Report, RunInfo, Slo};

/// Where requests go.
#[derive(Debug, Clone)]
pub struct Target {
    pub label: String,
    pub base_url: String,
    pub api_key: String,
    pub model: String,
}

/// How much to send, and what.
#[derive(Debug, Clone)]
pub struct Plan {
    pub requests: Option<u64>,
    pub duration: Option<Duration>,
    pub seed: u64,
    pub mix: Mix,
    pub slo: Slo,
}

impl Plan {
    fn body_rng(&self, n: u64) -> StdRng {
        StdRng::seed_from_u64(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    fn may_send(&self, n: u64, started: Instant) -> bool {
        self.requests.is_none_or(|max| n < max)
            && self.duration.is_none_or(|d| started.elapsed() < d)
    }
}

/// Runs `load` against `target` and reports.
pub async fn run(http: &reqwest::Client, target: &Target, plan: &Plan, load: Load) -> Report {
    let (tx, rx) = mpsc::unbounded_channel();
    let progress = bar(plan, &target.label, load);
    let collect = tokio::spawn(collect(rx, progress.clone()));
    let started = Instant::now();
    match load {
        Load::Concurrency(n) => closed_loop(http, target, plan, n, started, &tx).await,
        Load::Rate(r) => open_loop(http, target, plan, r, started, &tx).await,
    }
    drop(tx);
    let outcomes = collect.await.unwrap_or_default();
    let duration = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let info = RunInfo {
        label: &target.label,
        base_url: &target.base_url,
        model: &target.model,
        load,
        slo: plan.slo,
    };
    Report::build(&info, &outcomes, duration)
}

/// `clients` clients, each sending its next request when its last one ends.
async fn closed_loop(
    http: &reqwest::Client,
    target: &Target,
    plan: &Plan,
    clients: usize,
    started: Instant,
    tx: &mpsc::UnboundedSender<Outcome>,
) {
    let next = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for _ in 0..clients.max(1) {
        let (http, target, plan, next, tx) = (
            http.clone(),
            target.clone(),
            plan.clone(),
            Arc::clone(&next),
            tx.clone(),
        );
        set.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if !plan.may_send(n, started) {
                    return;
                }
                let body = plan.mix.draw(&mut plan.body_rng(n), &target.model, n);
                let _ = tx.send(send(&http, &target.base_url, &target.api_key, &body).await);
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// Poisson arrivals at `rate` per second, each request sent whether or not earlier ones
/// have ended.
async fn open_loop(
    http: &reqwest::Client,
    target: &Target,
    plan: &Plan,
    rate: f64,
    started: Instant,
    tx: &mpsc::UnboundedSender<Outcome>,
) {
    let mut set = JoinSet::new();
    for (n, at) in (0u64..).zip(Poisson::new(rate, plan.seed)) {
        if plan.duration.is_some_and(|d| at >= d) || !plan.may_send(n, started) {
            break;
        }
        tokio::time::sleep_until((started + at).into()).await;
        let body = plan.mix.draw(&mut plan.body_rng(n), &target.model, n);
        let (http, target, tx) = (http.clone(), target.clone(), tx.clone());
        set.spawn(async move {
            let _ = tx.send(send(&http, &target.base_url, &target.api_key, &body).await);
        });
        // Reap the finished ones so a long run does not hold every task.
        while set.try_join_next().is_some() {}
    }
    while set.join_next().await.is_some() {}
}

async fn collect(mut rx: mpsc::UnboundedReceiver<Outcome>, progress: ProgressBar) -> Vec<Outcome> {
    let mut all = Vec::new();
    let mut failed = 0;
    while let Some(o) = rx.recv().await {
        failed += usize::from(o.failure.is_some());
        all.push(o);
        progress.inc(1);
        if all.len() % 16 == 1 {
            progress.set_message(format!("{} done, {failed} failed", all.len()));
        }
    }
    all
}

fn bar(plan: &Plan, label: &str, load: Load) -> ProgressBar {
    let style =
        |t: &str| ProgressStyle::with_template(t).unwrap_or_else(|_| ProgressStyle::default_bar());
    let prefix = format!("{label} · {}", load.describe());
    let bar = match plan.requests {
        Some(n) => ProgressBar::new(n).with_style(style(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
        )),
        None => ProgressBar::new_spinner().with_style(style(
            "{prefix} [{elapsed_precise}] {spinner} {pos} requests {msg}",
        )),
    };
    bar.enable_steady_tick(Duration::from_millis(200));
    bar.with_prefix(prefix)
}
