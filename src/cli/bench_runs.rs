//! `supernet bench runs`: durable runs' event path under load. N runs are in flight at once
//! on one front's parts: each has a simulated executor (a task that appends what an LLM
//! round writes: one coalesced `assistant_message_delta` every 200 ms, then the run's end)
//! and one follower on the front's follower thread, the one that feeds the SSE streams.
//! It reports the delay from each append's start to the follower receiving the event (p50,
//! p99), the append time itself, and how much the store grew per run.
//!
//! `--redis URL` measures the cluster's log (Redis streams; growth from `INFO memory`),
//! without it the embedded log of `serve` (a redb file; growth of the file).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use serde_json::json;

use super::bench::percentile;
use crate::runs::event::RunEvent;
use crate::runs::follow::Followers;
use crate::runs::log::{embedded::RedbRunLog, redis::RedisRunLog, RunLog, RunMeta};

#[derive(Args, Debug)]
pub struct RunsBenchArgs {
    /// The cluster's Redis (a private one: the bench writes runs into it); without it the
    /// embedded log in a temporary directory.
    #[arg(long)]
    pub redis: Option<String>,
    /// Runs in flight at once.
    #[arg(long, default_value_t = 1000)]
    pub runs: usize,
    /// Delta events per run (one every 200 ms).
    #[arg(long, default_value_t = 30)]
    pub events: usize,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report {
    log: &'static str,
    runs: usize,
    events: usize,
    events_per_s: f64,
    follow_ms_p50: f64,
    follow_ms_p99: f64,
    append_ms_p50: f64,
    append_ms_p99: f64,
    store_bytes_per_run: f64,
}

/// About 4 tokens of text, as one coalesced delta carries at 20 tokens a second.
const TEXT: &str = "the quick brown fox jumps over";

pub fn run(a: RunsBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.runs >= 1 && a.events >= 1,
        "--runs and --events must be at least 1"
    );
    let dir = std::env::temp_dir().join(format!(
        "supernet-bench-runs-{}",
        crate::ids::random_hex(4)?
    ));
    let (log, kind): (Arc<dyn RunLog>, _) = match &a.redis {
        Some(url) => (Arc::new(RedisRunLog::connect(url)?), "redis"),
        None => (Arc::new(RedbRunLog::open(&dir)?), "embedded"),
    };
    let size = || -> anyhow::Result<f64> {
        Ok(match &a.redis {
            Some(url) => used_memory(url)?,
            None => std::fs::metadata(dir.join(crate::runs::log::embedded::FILE))?.len() as f64,
        })
    };
    let before = size()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(a.runs.min(512))
        .enable_all()
        .build()?;
    let (follow, append, took) = runtime.block_on(drive(&a, Arc::clone(&log)))?;
    let after = size()?;
    let total = (a.runs * (a.events + 2)) as f64;
    let report = Report {
        log: kind,
        runs: a.runs,
        events: a.events,
        events_per_s: total / took,
        follow_ms_p50: percentile(&follow, 0.5),
        follow_ms_p99: percentile(&follow, 0.99),
        append_ms_p50: percentile(&append, 0.5),
        append_ms_p99: percentile(&append, 0.99),
        store_bytes_per_run: (after - before) / a.runs as f64,
    };
    println!(
        "{} runs in flight ({} log), {} events each: {:.0} events/s\n\
         append → follower: p50 {:.2} ms, p99 {:.2} ms (the append itself: p50 {:.2} ms, p99 {:.2} ms)\n\
         store growth: {:.0} bytes per run",
        report.runs, report.log, report.events + 2, report.events_per_s, report.follow_ms_p50,
        report.follow_ms_p99, report.append_ms_p50, report.append_ms_p99, report.store_bytes_per_run
    );
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn used_memory(url: &str) -> anyhow::Result<f64> {
    let mut c = redis::Client::open(url)?.get_connection()?;
    let info: String = redis::cmd("INFO").arg("memory").query(&mut c)?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("INFO memory has no used_memory"))
}

/// Runs the executors and followers; the follow delays and append times (ms), and seconds.
async fn drive(
    a: &RunsBenchArgs,
    log: Arc<dyn RunLog>,
) -> anyhow::Result<(Vec<f64>, Vec<f64>, f64)> {
    let bench = crate::ids::random_hex(4)?;
    let owner = format!("bench-{bench}");
    let followers = Followers::start(Arc::clone(&log));
    // When each event's append started, by (run, sequence).
    let started: Arc<Mutex<HashMap<(usize, u64), Instant>>> = Arc::default();
    let mut receivers = Vec::new();
    for i in 0..a.runs {
        let run = format!("run_bench{bench}{i:06}");
        let meta = RunMeta {
            run_id: run.clone(),
            account_id: "bench".into(),
            key_id: "bench".into(),
            secret_hash: String::new(),
            idempotency_key: None,
            created_ms: crate::clock::unix_ms(),
            origin: String::new(),
            kind: crate::runs::log::KIND_CHAT.into(),
        };
        log.create(&meta, &RunEvent::new("run_created", json!({"runId": run})))?;
        log.claim(
            &run,
            &owner,
            crate::clock::unix_ms(),
            crate::clock::unix_ms() + 600_000,
        )?;
        receivers.push((i, run.clone(), followers.follow(&run, Some(0))));
    }
    let t0 = Instant::now();
    let mut appends = Vec::new();
    for (i, run, _) in &receivers {
        let (log, owner, started, run, i, n) = (
            Arc::clone(&log),
            owner.clone(),
            Arc::clone(&started),
            run.clone(),
            *i,
            a.events,
        );
        appends.push(tokio::spawn(async move {
            // Runs start spread over one coalescing period, as real rounds would.
            tokio::time::sleep(Duration::from_micros((i as u64 * 200_000) / 1000 % 200_000)).await;
            let mut took = Vec::with_capacity(n + 1);
            for seq in 1..=n as u64 + 1 {
                let mut e = if seq as usize == n + 1 {
                    RunEvent::new("run_completed", json!({"finalResponse": {"content": TEXT}}))
                } else {
                    RunEvent::new(
                        "assistant_message_delta",
                        json!({"round": 0, "content": TEXT}),
                    )
                };
                e.sequence = seq;
                let at = Instant::now();
                crate::locks::lock(&started).insert((i, seq), at);
                let (log, run, owner) = (Arc::clone(&log), run.clone(), owner.clone());
                tokio::task::spawn_blocking(move || log.append(&run, &owner, &[e])).await??;
                took.push(at.elapsed().as_secs_f64() * 1000.0);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            anyhow::Ok(took)
        }));
    }
    let mut follows = Vec::new();
    let mut waiting = Vec::new();
    for (i, _, mut rx) in receivers {
        let started = Arc::clone(&started);
        waiting.push(tokio::spawn(async move {
            let mut delays = Vec::new();
            while let Some(e) = rx.recv().await {
                let at = crate::locks::lock(&started).get(&(i, e.sequence)).copied();
                if let Some(at) = at {
                    delays.push(at.elapsed().as_secs_f64() * 1000.0);
                }
                if e.is_terminal() {
                    break;
                }
            }
            delays
        }));
    }
    let mut append = Vec::new();
    for h in appends {
        append.extend(h.await??);
    }
    for h in waiting {
        follows.extend(tokio::time::timeout(Duration::from_secs(60), h).await??);
    }
    let took = t0.elapsed().as_secs_f64();
    follows.sort_by(f64::total_cmp);
    append.sort_by(f64::total_cmp);
    anyhow::ensure!(
        follows.len() == a.runs * (a.events + 1),
        "followers missed events: {} of {}",
        follows.len(),
        a.runs * (a.events + 1)
    );
    Ok((follows, append, took))
}
