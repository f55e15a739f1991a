//! `supernet bench placement`: the coordinator's placement rate and latency, measured at the
//! bus with no front in the way.
//!
//! One front, with a load generator beside it, tops out near 1,100 requests a second on a
//! 2-core machine, so it cannot show what the coordinator does at 2,000 placements a second.
//! This driver stands in for a cluster's fronts: it publishes placement requests to the
//! coordinator's stream at a fixed rate, reads the answers on a node inbox of its own, and
//! times each job from its request to the coordinator's `Placed`, to the worker's `Accepted`
//! and to its last event. It bills nothing (it never goes through a front), so it is for a
//! test cluster of simulated workers: `loadtest/sim-cluster.sh` starts one.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::bus::redis::RedisBus;
use crate::bus::{read_stream, Ack, Bus};
use crate::locks::lock;
use crate::protocol::{
    self, streams, CoordinatorCommand, JobParams, JobSpec, NodeMessage, PlaceRequest, Placement,
    Progress, WorkerEvent,
};
use crate::worker::simulator::card::MODEL_ID;
/// How long answers still due are waited for once sending stops.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Args, Debug)]
pub struct PlacementArgs {
    /// The cluster's Redis, e.g. redis://host:6379/0.
    #[arg(long, env = "SUPERNET_REDIS")]
    pub redis: String,
    /// Placement requests per second, evenly spaced.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Seconds of sending; answers still due are then waited for (up to 10 s more).
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// The model the jobs ask for.
    #[arg(long = "model-id", default_value = MODEL_ID)]
    pub model_id: String,
    /// Prompt tokens of each job (each prompt differs, so prefix affinity pins none).
    #[arg(long, default_value_t = 16)]
    pub prompt_tokens: usize,
    /// Tokens each job generates.
    #[arg(long, default_value_t = 1)]
    pub max_tokens: usize,
    /// A process (the coordinator) whose CPU use over the sending window is reported.
    #[arg(long, value_name = "PID")]
    pub cpu_of: Option<u32>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

/// Milliseconds, by percentile.
#[derive(Serialize, Default)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    count: usize,
}

impl Latency {
    fn of(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| {
            ms.get(((ms.len() as f64 * q) as usize).min(ms.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0.0)
        };
        Self {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: ms.last().copied().unwrap_or(0.0),
            count: ms.len(),
        }
    }
}

#[derive(Serialize)]
struct Report {
    offered_per_s: f64,
    sent: usize,
    placed: usize,
    /// Placements answered per second over the sending window.
    placed_per_s: f64,
    finished: usize,
    refused: usize,
    /// Jobs told to wait (no worker had room) at least once.
    waited: usize,
    /// Jobs with no `Placed` or refusal by the end.
    unanswered: usize,
    /// Request to the coordinator's `Placed`: two bus hops and the decision.
    placement_ms: Latency,
    /// Request to the worker's `Accepted`.
    accepted_ms: Latency,
    /// Request to the job's last event.
    finished_ms: Latency,
    /// `--cpu-of`'s CPU over the sending window, in % of one core.
    cpu_percent: Option<f64>,
}

/// What is known of one job sent.
#[derive(Default)]
struct Job {
    sent: Option<Instant>,
    placed: Option<f64>,
    accepted: Option<f64>,
    finished: Option<f64>,
    refused: bool,
    waited: bool,
}

/// One answer, and when it was read.
struct Answer {
    job_id: String,
    message: NodeMessage,
    at: Instant,
}

pub fn run(a: PlacementArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.rate > 0.0 && a.rate.is_finite(),
        "--rate must be a positive number"
    );
    anyhow::ensure!(
        a.duration > 0.0 && a.duration.is_finite(),
        "--duration must be a positive number of seconds"
    );
    anyhow::ensure!(a.max_tokens > 0, "--max-tokens must be at least 1");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(drive(&a))?;
    print(&a, &report)
}

async fn drive(a: &PlacementArgs) -> anyhow::Result<Report> {
    let bus: Arc<dyn Bus> = Arc::new(
        RedisBus::connect(&a.redis)
            .await
            .with_context(|| format!("connecting to {}", a.redis))?,
    );
    let node = format!("bench-{}", crate::ids::random_hex(4)?);
    let inbox = streams::node(&node);
    // The first read creates the inbox's group, so no answer can come before it exists.
    bus.consume(&inbox, "bench", &node, 1, Duration::ZERO, Ack::OnRead)
        .await?;
    let answers = listen(Arc::clone(&bus), inbox.clone(), node.clone());
    let jobs: Arc<Mutex<HashMap<String, Job>>> = Arc::default();
    let collect = tokio::spawn(collect(answers, Arc::clone(&jobs)));

    let cpu_before = a.cpu_of.map(cpu_seconds).transpose()?;
    let start = Instant::now();
    let total = (a.rate * a.duration).round() as usize;
    let mut sent = 0;
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    eprintln!(
        "placing {total} jobs at {} a second for {} s",
        a.rate, a.duration
    );
    while sent < total {
        ticker.tick().await;
        let due = ((start.elapsed().as_secs_f64() * a.rate) as usize + 1).min(total);
        for n in sent..due {
            let job = job(a, &node, &inbox, n);
            let job_id = job.job_id.clone();
            lock(&jobs).insert(
                job_id.clone(),
                Job {
                    sent: Some(Instant::now()),
                    ..Job::default()
                },
            );
            let request =
                CoordinatorCommand::Place(Box::new(PlaceRequest::llm(job, 0, Vec::new())));
            let (bus, node) = (Arc::clone(&bus), node.clone());
            tokio::spawn(async move {
                if let Err(e) =
                    protocol::to_coordinator(bus.as_ref(), &node, &job_id, &request).await
                {
                    eprintln!("publishing a placement request: {e}");
                }
            });
        }
        sent = due;
    }
    let sending = start.elapsed();
    let cpu = match (a.cpu_of, cpu_before) {
        (Some(pid), Some(before)) => {
            Some(100.0 * (cpu_seconds(pid)? - before) / sending.as_secs_f64())
        }
        _ => None,
    };
    let deadline = Instant::now() + DRAIN;
    while Instant::now() < deadline && !all_done(&jobs) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    collect.abort();
    let jobs = std::mem::take(&mut *lock(&jobs));
    Ok(report(a, sent, sending, &jobs, cpu))
}

/// The request of job `n`: a prompt of its own, the sampler greedy.
fn job(a: &PlacementArgs, node: &str, inbox: &str, n: usize) -> JobSpec {
    let prompt = (0..a.prompt_tokens)
        .map(|i| ((n * 31 + i * 7) % 250) as u32)
        .collect();
    JobSpec {
        job_id: format!("{node}-{n}"),
        attempt: 0,
        account_id: format!("{node}-account"),
        model: a.model_id.clone(),
        prompt,
        params: JobParams::greedy(a.max_tokens),
        resume: Progress::default(),
        reply_to: inbox.to_string(),
        media: None,
        images: Vec::new(),
    }
}

/// The inbox's answers, as they are read.
fn listen(bus: Arc<dyn Bus>, inbox: String, node: String) -> UnboundedReceiver<Answer> {
    let (tx, rx) = unbounded_channel();
    tokio::spawn(read_stream(
        bus,
        inbox,
        "bench".into(),
        node,
        Ack::OnRead,
        move |d| {
            let env = d.envelope;
            let at = Instant::now();
            match env.payload::<NodeMessage>() {
                Ok(message) => match tx.send(Answer {
                    job_id: env.correlation_id,
                    message,
                    at,
                }) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => ControlFlow::Break(()),
                },
                Err(e) => {
                    eprintln!("an unreadable answer: {e}");
                    ControlFlow::Continue(())
                }
            }
        },
    ));
    rx
}

async fn collect(mut answers: UnboundedReceiver<Answer>, jobs: Arc<Mutex<HashMap<String, Job>>>) {
    while let Some(Answer {
        job_id,
        message,
        at,
    }) = answers.recv().await
    {
        let mut jobs = lock(&jobs);
        let Some(job) = jobs.get_mut(&job_id) else {
            continue;
        };
        let ms = job
            .sent
            .map_or(0.0, |s| at.duration_since(s).as_secs_f64() * 1e3);
        match message {
            NodeMessage::Placement {
                placement: Placement::Placed { .. },
                ..
            } => job.placed = Some(ms),
            NodeMessage::Placement {
                placement: Placement::Waiting(_),
                ..
            } => job.waited = true,
            NodeMessage::Placement {
                placement: Placement::Refused { .. },
                ..
            }
            | NodeMessage::Lost { .. } => job.refused = true,
            NodeMessage::Worker {
                event: WorkerEvent::Accepted { .. },
                ..
            } => job.accepted = Some(ms),
            NodeMessage::Worker {
                event: WorkerEvent::Rejected { .. },
                ..
            } => job.refused = true,
            NodeMessage::Worker {
                event: WorkerEvent::Finished { .. } | WorkerEvent::Failed(_) | WorkerEvent::Media(_),
                ..
            } => job.finished = Some(ms),
            NodeMessage::Worker {
                event: WorkerEvent::Text { .. },
                ..
            } => {}
        }
    }
}

fn all_done(jobs: &Mutex<HashMap<String, Job>>) -> bool {
    lock(jobs)
        .values()
        .all(|j| j.refused || (j.placed.is_some() && j.finished.is_some()))
}

fn report(
    a: &PlacementArgs,
    sent: usize,
    sending: Duration,
    jobs: &HashMap<String, Job>,
    cpu_percent: Option<f64>,
) -> Report {
    let series = |f: fn(&Job) -> Option<f64>| Latency::of(jobs.values().filter_map(f).collect());
    let placement_ms = series(|j| j.placed);
    Report {
        offered_per_s: a.rate,
        sent,
        placed: placement_ms.count,
        placed_per_s: placement_ms.count as f64 / sending.as_secs_f64(),
        finished: jobs.values().filter(|j| j.finished.is_some()).count(),
        refused: jobs.values().filter(|j| j.refused).count(),
        waited: jobs.values().filter(|j| j.waited).count(),
        unanswered: jobs
            .values()
            .filter(|j| j.placed.is_none() && !j.refused)
            .count(),
        placement_ms,
        accepted_ms: series(|j| j.accepted),
        finished_ms: series(|j| j.finished),
        cpu_percent,
    }
}

fn print(a: &PlacementArgs, r: &Report) -> anyhow::Result<()> {
    let line = |name: &str, l: &Latency| {
        println!(
            "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
            l.count, l.p50, l.p90, l.p99, l.max
        )
    };
    println!("offered {:.0}/s, sent {}, placed {} ({:.0}/s), finished {}, refused {}, waited {}, unanswered {}", r.offered_per_s, r.sent, r.placed, r.placed_per_s, r.finished, r.refused, r.waited, r.unanswered);
    if let Some(cpu) = r.cpu_percent {
        println!(
            "CPU of process {}: {cpu:.1} % of one core",
            a.cpu_of.unwrap_or_default()
        );
    }
    println!("| from the request to | jobs | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    line("`Placed`", &r.placement_ms);
    line("`Accepted`", &r.accepted_ms);
    line("the last event", &r.finished_ms);
    if a.json {
        println!("{}", serde_json::to_string(r)?);
    }
    Ok(())
}

/// User plus system CPU seconds of process `pid` so far (Linux's /proc).
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading the CPU use of process {pid}"))?;
    // The fields after the command name (which may hold spaces) start after its last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .with_context(|| format!("process {pid}'s stat has no field {i}"))
    };
    // utime and stime, the 14th and 15th fields of the line (11 and 12 after the name), in
    // clock ticks of USER_HZ, which is 100 on Linux.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}
