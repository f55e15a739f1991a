//! `supernet serve`: the whole service in one process. The front, the coordinator (the
//! cluster's, always leading), billing and one worker per `--model` run as actors on an
//! in-process bus, with the embedded store under `--data-dir`. It logs
//! `listening on http://HOST:PORT` once every model is loaded, its workers have registered
//! with the coordinator and the port is bound.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use anyhow::Context;
use clap::Args;

use super::engine::EngineArgs;
use super::media::MediaArgs;
use crate::admin::Handoff;
use crate::billing::accounts::Billing;
use crate::bus::memory::MemoryBus;
use crate::bus::Bus;
use crate::config::Config;
use crate::coordinator::lead::Sole;
use crate::coordinator::placer::Settings;
use crate::coordinator::{CoordinatorActor, PoolSnapshot};
use crate::engine::template::ChatTemplate;
use crate::engine::tokenizer::Tokenizer;
use crate::engine::vision::tower::VisionTower;
use crate::engine::Model;
use crate::front::FrontState;
use crate::media::backend::MediaBackend;
use crate::media::worker::MediaWorkerActor;
use crate::media::MediaServices;
use crate::session::inbox::NodeInboxes;
use crate::session::models::{model_id, ModelCatalog, ModelEntry};
use crate::session::prepare_pool::PreparePool;
use crate::session::roster::{LocalRoster, LocalWorker};
use crate::session::Services;
use crate::store::embedded::RedbStore;
use crate::store::Store;
use crate::worker::actor::WorkerActor;
use crate::worker::engine_thread::EngineConfig;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A GGUF model to serve. Repeat for several; the first is the default model.
    #[arg(long = "model", required = true)]
    pub models: Vec<PathBuf>,
    /// The address to listen on [default: 127.0.0.1, or the config file's].
    #[arg(long, env = "SUPERNET_HOST")]
    pub host: Option<String>,
    /// The port to listen on; 0 picks a free one [default: 8080, or the config file's].
    #[arg(long, env = "SUPERNET_PORT")]
    pub port: Option<u16>,
    /// Where accounts, keys and the ledger are kept.
    #[arg(long, env = "SUPERNET_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// The vision tower (mmproj GGUF) of the first --model [default: a file named
    /// `mmproj-<model file stem>.gguf` beside a model, or the one `mmproj-*` file there
    /// whose name holds the model's id].
    #[arg(long)]
    pub mmproj: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// A TOML file of settings (server, billing, limits, model tiers).
    #[arg(long, env = "SUPERNET_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub media: MediaArgs,
}

/// One model, loaded.
struct Loaded {
    id: String,
    model: Arc<Model>,
    tokenizer: Arc<Tokenizer>,
    template: ChatTemplate,
    tower: Option<Arc<VisionTower>>,
}

pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load_for_server(a.config.as_deref(), a.host.clone(), a.port)?;
    let store: Arc<dyn Store> = Arc::new(
        RedbStore::open(&a.data_dir)
            .with_context(|| format!("opening the store in {}", a.data_dir.display()))?,
    );
    let mut loaded = Vec::new();
    for (i, path) in a.models.iter().enumerate() {
        let model = Model::load(path)?;
        let tokenizer = Tokenizer::from_gguf(&model.file)
            .with_context(|| format!("reading the tokenizer of {}", path.display()))?;
        let template = ChatTemplate::from_gguf(&model.file, &tokenizer)
            .with_context(|| format!("reading the chat template of {}", path.display()))?;
        let id = model_id(path);
        anyhow::ensure!(
            loaded.iter().all(|l: &Loaded| l.id != id),
            "two --model files have the id `{id}`"
        );
        let explicit = a.mmproj.as_deref().filter(|_| i == 0);
        let tower = super::vision::find(path, &id, explicit)
            .map(|p| super::vision::load(&p, &model, &tokenizer))
            .transpose()?;
        loaded.push(Loaded {
            id,
            model: Arc::new(model),
            tokenizer: Arc::new(tokenizer),
            template,
            tower,
        });
    }
    let engine = a.engine.config(config.server.max_queue);
    let media = MediaServices::local(&a.data_dir.join("media"))?;
    let backends = a.media.backends()?;
    actix_web::rt::System::new().block_on(serve(
        config,
        store,
        loaded,
        engine,
        a.data_dir,
        (media, backends, a.media.media_concurrency),
    ))
}

async fn serve(
    config: Config,
    store: Arc<dyn Store>,
    loaded: Vec<Loaded>,
    engine: EngineConfig,
    data_dir: PathBuf,
    (media, backends, media_concurrency): (MediaServices, Vec<Arc<dyn MediaBackend>>, usize),
) -> anyhow::Result<()> {
    let node_id = "local".to_string();
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::default());
    let billing = Arc::new(Billing::new(store, config.billing.clone()));
    let placement = Settings {
        // Its workers live in this process: silence means a stalled event loop, not a
        // lost machine, so it is given longer than a cluster's.
        dead_after: Duration::from_secs(10),
        max_jobs_per_account: config.coordinator.max_jobs_per_account,
        allow_simulated: false,
        max_queue: config.coordinator.max_queue,
    };
    let coordinator = CoordinatorActor::new(
        node_id.clone(),
        Arc::clone(&bus),
        Arc::new(Sole),
        Arc::clone(&billing),
        placement,
    )
    .start();
    let models = Arc::new(ModelCatalog::default());
    let mut workers = Vec::new();
    for (i, l) in loaded.into_iter().enumerate() {
        tracing::info!(model = %l.id, threads = engine.threads, "loading the model");
        let worker = WorkerActor::new(
            &format!("{node_id}-w{i}"),
            &l.id,
            Arc::clone(&l.model),
            Arc::clone(&l.tokenizer),
            l.tower.clone(),
            engine,
            Arc::clone(&bus),
        )?;
        workers.push(LocalWorker::new(worker.info.clone(), &worker.start()));
        let tier = config.tier(&l.id).clone();
        models.add(
            ModelEntry::new(
                l.id,
                l.model.config.context_length,
                l.template,
                l.tokenizer,
                tier,
            )
            .with_vision(l.tower.map(|t| Arc::new(t.config.clone()))),
        );
    }
    if !backends.is_empty() {
        let worker = MediaWorkerActor::new(
            &format!("{node_id}-media"),
            backends,
            media_concurrency,
            media.assets.clone(),
            Arc::clone(&bus),
        );
        tracing::info!(pipelines = ?worker.info.pipelines, "media worker ready");
        workers.push(LocalWorker::new(worker.info.clone(), &worker.start()));
    }
    registered(&coordinator, workers.len()).await?;
    let (runs_node, config_runs) = (node_id.clone(), config.runs.clone());
    let services = Arc::new(Services {
        inboxes: NodeInboxes::new(Arc::clone(&bus), &node_id),
        node_id,
        bus,
        billing,
        hold_carries_placement: false,
        roster: Arc::new(LocalRoster { workers }),
        models,
        config,
        preparer: PreparePool::new(0, 128).context("starting the prepare threads")?,
        media: Arc::new(media),
        runs: crate::runs::Runs::new(
            Arc::new(crate::runs::log::embedded::RedbRunLog::open(&data_dir)?),
            &runs_node,
            config_runs,
        )?,
        templates: Arc::new(crate::workflows::templates::store::RedbTemplates::open(
            &data_dir,
        )?),
    });
    let mut handoff = Handoff::new(String::new())?;
    crate::runs::upkeep::start(Arc::clone(&services));
    let (server, bound) = crate::front::bind(FrontState {
        services,
        admin: Some(handoff.clone()),
    })?;
    handoff.addr = local(bound).to_string();
    handoff.write(&data_dir)?;
    tracing::info!("listening on http://{bound}");
    let result = server.await;
    let _ = std::fs::remove_file(Handoff::path(&data_dir));
    result.context("the HTTP server failed")
}

/// Waits until the coordinator has heard from all `n` workers, so the first request after
/// `listening on` finds them.
async fn registered(coordinator: &Addr<CoordinatorActor>, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while coordinator.send(PoolSnapshot).await?.len() < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the workers did not register with the coordinator within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// How this machine reaches `addr` (loopback for a wildcard address).
pub fn local(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}
