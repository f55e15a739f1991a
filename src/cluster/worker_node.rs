//! `supernet worker`: one model's engine joining a cluster from anywhere with a Redis URL.
//!
//! It publishes the model's card (the GGUF metadata: tokenizer, chat template, context
//! length, architecture) so fronts can serve the model without its weights, then runs the
//! same WorkerActor as `supernet serve` on its Redis inbox and sends a heartbeat with its
//! capabilities and load every [`HEARTBEAT`]. On SIGTERM (or Ctrl-C) it drains: it takes no
//! new jobs, finishes the ones it holds, says it is leaving, and exits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use anyhow::Context;
use clap::Args;

use super::protocol::{unix_ms, Heartbeat, ModelCard, KIND_HEARTBEAT};
use super::state::ClusterState;
use crate::bus::redis::RedisBus;
use crate::bus::{send, streams, Bus};
use crate::cli::engine::EngineArgs;
use crate::engine::tokenizer::Tokenizer;
use crate::engine::Model;
use crate::session::models::model_id;
use crate::telemetry::{metrics_http, snapshot};
use crate::worker::actor::{GetLoad, SetDraining, WorkerActor, WorkerInfo};

/// How often a worker reports; a coordinator declares it dead after a few missed beats.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
const HEARTBEAT_STREAM_LEN: usize = 10_000;

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The cluster's Redis, e.g. redis://host:6379/0 (credentials in the URL).
    #[arg(long, env = "SUPERNET_REDIS")]
    pub redis: String,
    /// The GGUF model to serve.
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Jobs that may wait beyond a full batch.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// This worker's id, unique in the cluster (in Kubernetes, the pod's name) [default:
    /// random].
    #[arg(long, env = "SUPERNET_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Where to serve /metrics and /healthz (port 0 picks a free one).
    #[arg(long, default_value = "0.0.0.0:9090", env = "SUPERNET_METRICS_ADDR")]
    pub metrics_addr: String,
}

pub fn run(a: WorkerArgs) -> anyhow::Result<()> {
    let model = Model::load(&a.model)?;
    let tokenizer = Tokenizer::from_gguf(&model.file).with_context(|| format!("reading the tokenizer of {}", a.model.display()))?;
    let id = model_id(&a.model);
    let card = ModelCard {
        model_id: id.clone(),
        architecture: model.file.str("general.architecture").unwrap_or("unknown").to_string(),
        context_length: model.config.context_length,
        gguf_metadata: model.file.metadata_only(),
    };
    let worker_id = match a.worker_id.clone() {
        Some(w) => w,
        None => format!("w-{}", crate::ids::random_hex(4)?),
    };
    actix::System::new().block_on(serve(a, worker_id, card, Arc::new(model), Arc::new(tokenizer)))
}

async fn serve(a: WorkerArgs, worker_id: String, card: ModelCard, model: Arc<Model>, tokenizer: Arc<Tokenizer>) -> anyhow::Result<()> {
    let bus: Arc<dyn Bus> = Arc::new(RedisBus::connect(&a.redis).await.with_context(|| format!("connecting to {}", a.redis))?);
    let state = ClusterState::connect(&a.redis).await.with_context(|| format!("connecting to {}", a.redis))?;
    state.put_card(&card).await.context("publishing the model card")?;
    let config = a.engine.config(a.max_queue);
    let worker = WorkerActor::new(&worker_id, &card.model_id, model, tokenizer, config, Arc::clone(&bus))?;
    let info = worker.info.clone();
    let worker = worker.start();
    tracing::info!(worker = %info.worker_id, model = %info.model_id, threads = config.threads, max_batch = config.batch.max_batch, "worker ready");
    let (own, own_info) = (worker.clone(), info.clone());
    metrics_http::start(&a.metrics_addr, Arc::new(move || {
        let (worker, info) = (own.clone(), own_info.clone());
        Box::pin(async move {
            let mut out = String::new();
            if let Ok(load) = worker.send(GetLoad).await {
                snapshot::workers(&mut out, &[(info, load)]);
            }
            out
        })
    }))?;
    let beats = actix::spawn(heartbeats(Arc::clone(&bus), info.clone(), worker.clone()));

    shutdown_signal().await;
    tracing::info!(worker = %info.worker_id, "draining: finishing held jobs, taking no new ones");
    worker.send(SetDraining(true)).await?;
    while worker.send(GetLoad).await?.busy() > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    beats.abort();
    beat(bus.as_ref(), &info, &worker, true).await;
    tracing::info!(worker = %info.worker_id, "drained; leaving");
    Ok(())
}

async fn heartbeats(bus: Arc<dyn Bus>, info: WorkerInfo, worker: Addr<WorkerActor>) {
    let mut every = tokio::time::interval(HEARTBEAT);
    loop {
        every.tick().await;
        beat(bus.as_ref(), &info, &worker, false).await;
    }
}

async fn beat(bus: &dyn Bus, info: &WorkerInfo, worker: &Addr<WorkerActor>, leaving: bool) {
    let Ok(load) = worker.send(GetLoad).await else { return };
    let hb = Heartbeat { info: info.clone(), load, leaving, sent_at_ms: unix_ms() };
    if let Err(e) = send(bus, &streams::heartbeats(), HEARTBEAT_STREAM_LEN, KIND_HEARTBEAT, &info.worker_id, &info.worker_id, &hb).await {
        tracing::warn!("sending a heartbeat: {e}");
    }
}

/// SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM: {e}");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
