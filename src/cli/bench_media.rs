//! `supernet bench media`: what the platform adds to a hosted media call, and how many media
//! calls a second one front and one coordinator carry. It runs `serve`'s parts in-process:
//! the memory bus, the coordinator, media workers, billing on an embedded store, and
//! ToolExecutorActors (the front's side of each call: hold, placement, progress, settle).
//!
//! - Against a backend (`--backend comfyui=URL`, a ComfyUI or the stand-in answering at
//!   once): calls one after another; each call's platform time is its total (from the
//!   executor's start to its outcome) less the backend's own time (the worker's calls to
//!   the backend: uploads, submit, waiting, downloads), timed around the backend.
//! - With `--simulate-workers N`: N media workers whose backend answers at once with a tiny
//!   PNG, driven by `--concurrency` calls in flight: calls a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Actor;
use anyhow::Context;
use clap::Args;
use serde::Serialize;

use crate::billing::accounts::Billing;
use crate::bus::memory::MemoryBus;
use crate::bus::Bus;
use crate::config::Config;
use crate::coordinator::lead::Sole;
use crate::coordinator::placer::Settings;
use crate::coordinator::{CoordinatorActor, PoolSnapshot};
use crate::locks::lock;
use crate::media::backend::{
    parse_backend, BackendError, BackendFuture, BackendJob, MediaBackend, Output, Started,
};
use crate::media::graphs::Graphs;
use crate::media::worker::MediaWorkerActor;
use crate::media::MediaServices;
use crate::money::Amount;
use crate::protocol::media::{MediaKind, MediaTask};
use crate::session::inbox::NodeInboxes;
use crate::session::models::ModelCatalog;
use crate::session::prepare_pool::PreparePool;
use crate::session::roster::{LocalRoster, LocalWorker};
use crate::session::Services;
use crate::store::embedded::RedbStore;
use crate::store::{Balances, Store};
use crate::tools::call::ReadyCall;
use crate::tools::executor::{MediaCall, ToolExecutorActor};

#[derive(Args, Debug)]
pub struct MediaBenchArgs {
    /// A backend to time calls against, KIND=URL (e.g. comfyui=http://127.0.0.1:8188).
    #[arg(long, conflicts_with = "simulate_workers")]
    pub backend: Option<String>,
    /// Simulated media workers (a backend that answers at once) for the throughput run.
    #[arg(long)]
    pub simulate_workers: Option<usize>,
    /// Calls to make.
    #[arg(long, default_value_t = 200)]
    pub calls: usize,
    /// Calls in flight at once (the throughput run).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Where the store and media go [default: a fresh temporary folder].
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

/// Times each job's calls to the backend it wraps, by idempotency key.
struct Timed {
    inner: Arc<dyn MediaBackend>,
    spent: Arc<Mutex<HashMap<String, Duration>>>,
    /// Backend job id to idempotency key.
    keys: Mutex<HashMap<String, String>>,
}

impl Timed {
    fn add(&self, key: &str, d: Duration) {
        *lock(&self.spent).entry(key.to_string()).or_default() += d;
    }
}

impl MediaBackend for Timed {
    fn url(&self) -> &str {
        self.inner.url()
    }

    fn pipelines(&self) -> Vec<String> {
        self.inner.pipelines()
    }

    fn start<'a>(
        &'a self,
        job: &'a BackendJob,
    ) -> BackendFuture<'a, Result<Started, BackendError>> {
        Box::pin(async move {
            let t = Instant::now();
            let r = self.inner.start(job).await;
            self.add(&job.key, t.elapsed());
            if let Ok(Started::Submitted(id)) = &r {
                lock(&self.keys).insert(id.clone(), job.key.clone());
            }
            r
        })
    }

    fn wait<'a>(
        &'a self,
        id: &'a str,
        progress: &'a (dyn Fn(f32) + Send + Sync),
    ) -> BackendFuture<'a, Result<Vec<Output>, BackendError>> {
        Box::pin(async move {
            let t = Instant::now();
            let r = self.inner.wait(id, progress).await;
            if let Some(key) = lock(&self.keys).get(id).cloned() {
                self.add(&key, t.elapsed());
            }
            r
        })
    }

    fn cancel<'a>(&'a self, id: &'a str) -> BackendFuture<'a, ()> {
        self.inner.cancel(id)
    }
}

/// A backend that answers every job at once with a 1×1 PNG.
struct Instant1x1;

impl MediaBackend for Instant1x1 {
    fn url(&self) -> &str {
        "simulated"
    }

    fn pipelines(&self) -> Vec<String> {
        vec!["text_to_image".into()]
    }

    fn start<'a>(&'a self, _: &'a BackendJob) -> BackendFuture<'a, Result<Started, BackendError>> {
        let mut png = Vec::new();
        let made = image::DynamicImage::new_rgb8(1, 1)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png);
        Box::pin(async move {
            made.map_err(|e| BackendError::failed(e.to_string()))?;
            Ok(Started::Done(vec![Output {
                kind: MediaKind::Image,
                mime: "image/png".into(),
                bytes: png,
            }]))
        })
    }

    fn wait<'a>(
        &'a self,
        _: &'a str,
        _: &'a (dyn Fn(f32) + Send + Sync),
    ) -> BackendFuture<'a, Result<Vec<Output>, BackendError>> {
        Box::pin(async { Err(BackendError::unavailable("nothing to wait for")) })
    }

    fn cancel<'a>(&'a self, _: &'a str) -> BackendFuture<'a, ()> {
        Box::pin(async {})
    }
}

#[derive(Serialize)]
struct Report {
    calls: usize,
    failed: usize,
    seconds: f64,
    calls_per_s: f64,
    total_ms_p50: f64,
    total_ms_p99: f64,
    platform_ms_p50: Option<f64>,
    platform_ms_p99: Option<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn run(a: MediaBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.calls >= 1 && a.concurrency >= 1,
        "--calls and --concurrency must be at least 1"
    );
    let dir = match &a.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "supernet-bench-media-{}",
            crate::ids::random_hex(4)?
        )),
    };
    std::fs::create_dir_all(&dir)?;
    actix::System::new().block_on(bench(a, dir))
}

async fn bench(a: MediaBenchArgs, dir: std::path::PathBuf) -> anyhow::Result<()> {
    let spent = Arc::new(Mutex::new(HashMap::new()));
    let (backends, workers): (Vec<Arc<dyn MediaBackend>>, usize) =
        match (&a.backend, a.simulate_workers) {
            (Some(spec), _) => {
                let inner = parse_backend(spec, &Arc::new(Graphs::defaults()?))?;
                let timed = Timed {
                    inner,
                    spent: Arc::clone(&spent),
                    keys: Mutex::new(HashMap::new()),
                };
                (vec![Arc::new(timed)], 1)
            }
            (None, Some(n)) if n >= 1 => (vec![Arc::new(Instant1x1)], n),
            _ => anyhow::bail!("give --backend KIND=URL or --simulate-workers N"),
        };
    let sequential = a.backend.is_some();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.join("store")).context("the store")?);
    let account = store.create_account(
        "bench",
        &Balances {
            spark: Amount::from_millis(1_000_000_000),
            sogni: Amount::ZERO,
        },
    )?;
    let key = store.create_key(&account.id)?;
    let config = Config::default();
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::default());
    let billing = Arc::new(Billing::new(store, config.billing.clone()));
    let settings = Settings {
        dead_after: Duration::from_secs(10),
        max_jobs_per_account: 0,
        allow_simulated: false,
        max_queue: 100_000,
    };
    let node = "bench".to_string();
    let coordinator = CoordinatorActor::new(
        node.clone(),
        Arc::clone(&bus),
        Arc::new(Sole),
        Arc::clone(&billing),
        settings,
    )
    .start();
    let media = MediaServices::local(&dir.join("media"))?;
    let mut roster = Vec::new();
    for i in 0..workers {
        let w = MediaWorkerActor::new(
            &format!("media-{i}"),
            backends.clone(),
            4,
            media.assets.clone(),
            Arc::clone(&bus),
        );
        roster.push(LocalWorker::new(w.info.clone(), &w.start()));
    }
    while coordinator.send(PoolSnapshot).await?.len() < workers {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (runs_node, config_runs) = (node.clone(), config.runs.clone());
    let services = Arc::new(Services {
        inboxes: NodeInboxes::new(Arc::clone(&bus), &node),
        node_id: node,
        bus,
        billing: Arc::clone(&billing),
        hold_carries_placement: false,
        roster: Arc::new(LocalRoster { workers: roster }),
        models: Arc::new(ModelCatalog::default()),
        config,
        preparer: PreparePool::new(1, 16)?,
        media: Arc::new(media),
        runs: crate::runs::Runs::new(
            Arc::new(crate::runs::log::embedded::RedbRunLog::open(&dir)?),
            &runs_node,
            config_runs,
        )?,
        templates: Arc::new(crate::workflows::templates::store::RedbTemplates::open(
            &dir,
        )?),
    });
    let presented = billing
        .authenticate(key.api_key.clone())
        .await?
        .context("the bench key")?;
    let call = |i: usize| {
        let job_id = format!("bench-{i}");
        let c = MediaCall {
            job_id: job_id.clone(),
            call_id: format!("call_{i}"),
            tool: "sogni_generate_image".into(),
            key: presented.clone(),
            choice: crate::api::chat_request::TokenChoice::Auto,
            ready: ReadyCall {
                pipeline: "text_to_image".into(),
                task: MediaTask {
                    tool: "sogni_generate_image".into(),
                    arguments: format!(r#"{{"prompt":"bench {i}"}}"#),
                    inputs: Vec::new(),
                    idempotency_key: job_id,
                },
                units: 1,
            },
            unit_usd: Amount::from_millis(20),
            priority: 0,
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let done = ToolExecutorActor::run(Arc::clone(&services), c, tx);
        async move {
            let t = Instant::now();
            // Progress is drained as it comes; the outcome ends the call.
            let mut rx = rx;
            let drain = async { while rx.recv().await.is_some() {} };
            let (outcome, ()) = futures_util::future::join(done, drain).await;
            (t.elapsed(), matches!(outcome, Ok(Ok(_))))
        }
    };
    let started = Instant::now();
    let mut results = Vec::with_capacity(a.calls);
    if sequential {
        for i in 0..a.calls {
            results.push((i, call(i).await));
        }
    } else {
        use futures_util::stream::{self, StreamExt};
        let mut s = stream::iter(0..a.calls)
            .map(|i| {
                let f = call(i);
                async move { (i, f.await) }
            })
            .buffer_unordered(a.concurrency);
        while let Some(r) = s.next().await {
            results.push(r);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let spent = lock(&spent).clone();
    let mut totals: Vec<f64> = results
        .iter()
        .map(|(_, (d, _))| d.as_secs_f64() * 1e3)
        .collect();
    let mut platform: Vec<f64> = results
        .iter()
        .filter_map(|(i, (d, _))| {
            spent
                .get(&format!("bench-{i}"))
                .map(|b| d.saturating_sub(*b).as_secs_f64() * 1e3)
        })
        .collect();
    totals.sort_by(f64::total_cmp);
    platform.sort_by(f64::total_cmp);
    let report = Report {
        calls: results.len(),
        failed: results.iter().filter(|(_, (_, ok))| !ok).count(),
        seconds,
        calls_per_s: results.len() as f64 / seconds,
        total_ms_p50: percentile(&totals, 0.5),
        total_ms_p99: percentile(&totals, 0.99),
        platform_ms_p50: (!platform.is_empty()).then(|| percentile(&platform, 0.5)),
        platform_ms_p99: (!platform.is_empty()).then(|| percentile(&platform, 0.99)),
    };
    println!(
        "{} calls ({} failed) in {:.2} s: {:.1} calls/s; total p50 {:.1} ms p99 {:.1} ms{}",
        report.calls,
        report.failed,
        report.seconds,
        report.calls_per_s,
        report.total_ms_p50,
        report.total_ms_p99,
        match (report.platform_ms_p50, report.platform_ms_p99) {
            (Some(p50), Some(p99)) => format!("; platform p50 {p50:.1} ms p99 {p99:.1} ms"),
            _ => String::new(),
        }
    );
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}
