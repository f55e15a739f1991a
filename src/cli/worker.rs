//! `supernet worker`: one model's engine joining a cluster from anywhere with a Redis URL.
//!
//! It publishes the model's card (the GGUF metadata: tokenizer, chat template, context
//! length, architecture) so fronts can serve the model without its weights, then runs the
//! same WorkerActor as `supernet serve` on its Redis inbox, which heartbeats its
//! capabilities and load to the coordinators. On SIGTERM (or Ctrl-C) it drains: it takes no
//! new jobs, finishes the ones it holds, says it is leaving, and exits.
//!
//! With `--simulate` it loads no model: the [`crate::worker::simulator`] stands in for the
//! engine, one process may run many simulated workers, and they publish the simulator's
//! made-up model card.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Handler, Recipient};
use anyhow::Context;
use clap::Args;

use super::engine::EngineArgs;
use super::media::MediaArgs;
use super::{metrics_addr, shutdown_signal};
use crate::bus::redis::RedisBus;
use crate::bus::Bus;
use crate::cluster::state::ClusterState;
use crate::engine::tokenizer::Tokenizer;
use crate::engine::Model;
use crate::media::worker::MediaWorkerActor;
use crate::media::MediaServices;
use crate::protocol::ModelCard;
use crate::protocol::WorkerInfo;
use crate::session::models::model_id;
use crate::session::roster::LocalWorker;
use crate::telemetry::{metrics_http, snapshot};
use crate::worker::actor::{GetLoad, Leave, SetDraining, WorkerActor};
use crate::worker::simulator::{card, SimSettings, Simulator};

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The cluster's Redis, e.g. redis://host:6379/0 (credentials in the URL).
    #[arg(long, env = "SUPERNET_REDIS")]
    pub redis: String,
    /// What the worker does: `llm` (serve --model) or `media` (run image, video and music
    /// jobs on its --backend(s)).
    #[arg(long, value_enum, default_value = "llm")]
    pub kind: KindArg,
    /// The GGUF model to serve (an `llm` worker).
    #[arg(long, conflicts_with = "simulate")]
    pub model: Option<PathBuf>,
    /// The model's vision tower (mmproj GGUF) [default: a file named
    /// `mmproj-<model file stem>.gguf` beside the model, or the one `mmproj-*` file there
    /// whose name holds the model's id].
    #[arg(long, conflicts_with = "simulate")]
    pub mmproj: Option<PathBuf>,
    #[command(flatten)]
    pub media: MediaArgs,
    /// Where a media worker keeps its outputs: the store the cluster's fronts read
    /// (`--media-store` of `supernet front`: `s3://BUCKET[/PREFIX]` or a shared folder).
    #[arg(long, env = "SUPERNET_MEDIA_STORE", default_value = "media")]
    pub media_store: String,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Jobs that may wait beyond a full batch.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// This worker's id, unique in the cluster (in Kubernetes, the pod's name) [default:
    /// random].
    #[arg(long, env = "SUPERNET_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Where to serve /metrics and /healthz [default: a free port on 127.0.0.1, logged].
    #[arg(long, env = "SUPERNET_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    #[command(flatten)]
    pub simulation: SimulationArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindArg {
    Llm,
    Media,
}

/// `--simulate` and its settings.
#[derive(Args, Debug)]
pub struct SimulationArgs {
    /// SIMULATOR, NOT A MODEL: load no model and stream placeholder tokens (serving the
    /// model `simulated`), to load-test fronts, the bus and coordinators at any pool size.
    /// It registers as simulated; coordinators place nothing on it unless started with
    /// --allow-simulated.
    #[arg(long)]
    pub simulate: bool,
    /// Simulated decode speed of each sequence.
    #[arg(long, default_value_t = 50.0, requires = "simulate")]
    pub tokens_per_s: f64,
    /// Simulated time from taking a job to its first token.
    #[arg(long, default_value_t = 20.0, requires = "simulate")]
    pub prefill_ms: f64,
    /// Scales every simulated delay by a random factor in 1 ± this (0 to 1).
    #[arg(long, default_value_t = 0.0, requires = "simulate")]
    pub jitter: f64,
    /// Tokens a simulated job produces at most (it ends with `stop` there).
    #[arg(long, default_value_t = 1024, requires = "simulate")]
    pub max_output_tokens: usize,
    /// Simulated workers this process runs, each registering and heartbeating on its own
    /// (ids `<worker-id>-<n>`).
    #[arg(long, default_value_t = 1, requires = "simulate")]
    pub simulate_workers: usize,
}

impl SimulationArgs {
    fn settings(&self, engine: &EngineArgs, max_queue: usize) -> anyhow::Result<SimSettings> {
        anyhow::ensure!(
            self.tokens_per_s.is_finite() && self.tokens_per_s > 0.0,
            "--tokens-per-s must be positive"
        );
        anyhow::ensure!(
            self.prefill_ms.is_finite() && self.prefill_ms >= 0.0,
            "--prefill-ms must not be negative"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.jitter),
            "--jitter must be between 0 and 1"
        );
        anyhow::ensure!(
            self.simulate_workers >= 1,
            "--simulate-workers must be at least 1"
        );
        anyhow::ensure!(engine.max_batch >= 1, "--max-batch must be at least 1");
        let prefill = Duration::from_secs_f64(self.prefill_ms / 1e3);
        Ok(SimSettings {
            tokens_per_s: self.tokens_per_s,
            prefill,
            jitter: self.jitter,
            max_batch: engine.max_batch,
            max_queue,
            max_output: self.max_output_tokens,
        })
    }
}

/// Builds the worker actor with a given id, started.
type MakeWorker = Box<dyn Fn(&str, Arc<dyn Bus>) -> anyhow::Result<Member>>;

/// A started worker actor, as this process drives it.
struct Member {
    worker: LocalWorker,
    leave: Recipient<Leave>,
}

impl Member {
    fn of<A>(info: WorkerInfo, addr: &Addr<A>) -> Self
    where
        A: Actor<Context = actix::Context<A>>
            + Handler<GetLoad>
            + Handler<SetDraining>
            + Handler<Leave>,
    {
        Self {
            worker: LocalWorker::new(info, addr),
            leave: addr.clone().recipient(),
        }
    }
}

pub fn run(a: WorkerArgs) -> anyhow::Result<()> {
    if a.kind == KindArg::Media {
        return run_media(a);
    }
    let base_id = match a.worker_id.clone() {
        Some(w) => w,
        None if a.simulation.simulate => format!("sim-{}", crate::ids::random_hex(4)?),
        None => format!("w-{}", crate::ids::random_hex(4)?),
    };
    if a.simulation.simulate {
        let settings = a.simulation.settings(&a.engine, a.max_queue)?;
        let card = ModelCard {
            model_id: card::MODEL_ID.into(),
            architecture: card::ARCHITECTURE.into(),
            context_length: card::CONTEXT as u64,
            gguf_metadata: card::metadata(),
            mmproj_metadata: None,
        };
        let count = a.simulation.simulate_workers;
        let ids: Vec<String> = if count == 1 {
            vec![base_id]
        } else {
            (0..count).map(|i| format!("{base_id}-{i}")).collect()
        };
        let make: MakeWorker = Box::new(move |id, bus| {
            // Ids differ, so jitter sequences do.
            let seed = id
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
            let w = WorkerActor::simulated(id, Simulator::new(settings, seed), bus);
            Ok(Member::of(w.info.clone(), &w.start()))
        });
        tracing::warn!(workers = count, tokens_per_s = settings.tokens_per_s, prefill_ms = a.simulation.prefill_ms, "SIMULATED workers: no model, placeholder tokens; placed only by coordinators started with --allow-simulated");
        return actix::System::new().block_on(serve(a, ids, Some(card), make));
    }
    let path = a
        .model
        .clone()
        .context("--model is required (or --kind media with --backend, or --simulate)")?;
    let model = Model::load(&path)?;
    let tokenizer = Tokenizer::from_gguf(&model.file)
        .with_context(|| format!("reading the tokenizer of {}", path.display()))?;
    let id = model_id(&path);
    let tower = super::vision::find(&path, &id, a.mmproj.as_deref())
        .map(|p| super::vision::load(&p, &model, &tokenizer))
        .transpose()?;
    let card = ModelCard {
        model_id: id,
        architecture: model
            .file
            .str("general.architecture")
            .unwrap_or("unknown")
            .to_string(),
        context_length: model.config.context_length as u64,
        gguf_metadata: model.file.metadata_only(),
        mmproj_metadata: tower.as_ref().map(|t| t.file.metadata_only()),
    };
    let config = a.engine.config(a.max_queue);
    let (model, tokenizer, id) = (Arc::new(model), Arc::new(tokenizer), card.model_id.clone());
    let make: MakeWorker = Box::new(move |worker_id, bus| {
        let w = WorkerActor::new(
            worker_id,
            &id,
            Arc::clone(&model),
            Arc::clone(&tokenizer),
            tower.clone(),
            config,
            bus,
        )?;
        tracing::info!(worker = %worker_id, model = %id, threads = config.threads, max_batch = config.batch.max_batch, "worker ready");
        Ok(Member::of(w.info.clone(), &w.start()))
    });
    actix::System::new().block_on(serve(a, vec![base_id], Some(card), make))
}

/// A media worker: its backends' pipelines, its outputs in the shared media store.
fn run_media(a: WorkerArgs) -> anyhow::Result<()> {
    let backends = a.media.backends()?;
    anyhow::ensure!(
        !backends.is_empty(),
        "a media worker needs at least one --backend KIND=URL (comfyui=http://HOST:PORT or openai-images=URL)"
    );
    let id = match a.worker_id.clone() {
        Some(w) => w,
        None => format!("media-{}", crate::ids::random_hex(4)?),
    };
    let concurrency = a.media.media_concurrency;
    actix::System::new().block_on(async move {
        let assets = MediaServices::open(&a.media_store).await?.assets;
        let make: MakeWorker = Box::new(move |worker_id, bus| {
            let w = MediaWorkerActor::new(
                worker_id,
                backends.clone(),
                concurrency,
                assets.clone(),
                bus,
            );
            tracing::info!(worker = %worker_id, pipelines = ?w.info.pipelines, "media worker ready");
            Ok(Member::of(w.info.clone(), &w.start()))
        });
        serve(a, vec![id], None, make).await
    })
}

async fn serve(
    a: WorkerArgs,
    ids: Vec<String>,
    card: Option<ModelCard>,
    make: MakeWorker,
) -> anyhow::Result<()> {
    let bus: Arc<dyn Bus> = Arc::new(
        RedisBus::connect(&a.redis)
            .await
            .with_context(|| format!("connecting to {}", a.redis))?,
    );
    let state = ClusterState::connect(&a.redis)
        .await
        .with_context(|| format!("connecting to {}", a.redis))?;
    if let Some(card) = &card {
        state
            .put_card(card)
            .await
            .context("publishing the model card")?;
    }
    let mut workers = Vec::with_capacity(ids.len());
    for id in &ids {
        workers.push(make(id, Arc::clone(&bus))?);
    }
    let own: Vec<LocalWorker> = workers.iter().map(|m| m.worker.clone()).collect();
    metrics_http::start(
        metrics_addr(a.metrics_addr.as_deref()),
        Arc::new(move || {
            let own = own.clone();
            Box::pin(async move {
                let mut loads = Vec::with_capacity(own.len());
                for w in &own {
                    if let Ok(load) = w.load.send(GetLoad).await {
                        loads.push((w.info.clone(), load));
                    }
                }
                let mut out = String::new();
                snapshot::workers(&mut out, &loads);
                out
            })
        }),
    )?;
    shutdown_signal().await;
    tracing::info!(
        workers = workers.len(),
        "draining: finishing held jobs, taking no new ones"
    );
    for m in &workers {
        m.worker.drain.send(SetDraining(true)).await?;
    }
    for m in &workers {
        while m.worker.load.send(GetLoad).await?.busy() > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Side by side: a process of many simulated workers whose Redis is gone waits out one
    // connection timeout, not one per worker.
    for left in futures_util::future::join_all(workers.iter().map(|m| m.leave.send(Leave))).await {
        if let Ok(Err(e)) = left {
            tracing::warn!("saying goodbye: {e}");
        }
    }
    tracing::info!(workers = workers.len(), "drained; leaving");
    Ok(())
}
