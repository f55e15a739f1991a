//! `supernet front --redis URL`: a stateless HTTP front of a cluster. It serves the same API
//! as `supernet serve`, bills through the Redis store, places jobs through the leader
//! coordinator, and learns the served models from the cards workers publish. Run any number
//! behind a load balancer; one that dies loses only its open connections, and the holds it
//! placed are released by the coordinator's reaper when their lease ends.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::admin::Handoff;
use crate::billing::accounts::Billing;
use crate::bus::redis::RedisBus;
use crate::bus::Bus;
use crate::cluster::front_view::ClusterView;
use crate::cluster::state::ClusterState;
use crate::config::Config;
use crate::front::FrontState;
use crate::media::MediaServices;
use crate::session::inbox::NodeInboxes;
use crate::session::models::ModelCatalog;
use crate::session::prepare_pool::PreparePool;
use crate::session::Services;
use crate::store::redis::RedisStore;
use crate::store::Store;

#[derive(Args, Debug)]
pub struct FrontArgs {
    /// The cluster's Redis, e.g. redis://host:6379/0 (credentials in the URL).
    #[arg(long, env = "SUPERNET_REDIS")]
    pub redis: String,
    /// The address to listen on [default: 127.0.0.1, or the config file's].
    #[arg(long, env = "SUPERNET_HOST")]
    pub host: Option<String>,
    /// The port to listen on; 0 picks a free one [default: 8080, or the config file's].
    #[arg(long, env = "SUPERNET_PORT")]
    pub port: Option<u16>,
    /// A TOML file of settings (server, billing, limits, model tiers).
    #[arg(long, env = "SUPERNET_CONFIG")]
    pub config: Option<PathBuf>,
    /// A secret (at least 32 characters) that opens the admin endpoint (POST
    /// /admin/v1/commands, `Authorization: Bearer KEY`): accounts, credit and API keys on
    /// the cluster's store. Without it the endpoint refuses everyone.
    #[arg(long, env = "SUPERNET_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Where hosted tools' media is kept, shared by every front and media worker of the
    /// cluster: `s3://BUCKET[/PREFIX]` (S3 or MinIO; credentials and endpoint from the
    /// `AWS_*` environment) or a shared folder. Its `url.key` signs the media URLs.
    #[arg(long, env = "SUPERNET_MEDIA_STORE", default_value = "media")]
    pub media_store: String,
}

/// The shortest admin key taken: guessing one must be hopeless.
const MIN_ADMIN_KEY: usize = 32;

pub fn run(a: FrontArgs) -> anyhow::Result<()> {
    let config = Config::load_for_server(a.config.as_deref(), a.host.clone(), a.port)?;
    let admin = match a.admin_key.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(k) if k.len() < MIN_ADMIN_KEY => {
            anyhow::bail!("--admin-key must be at least {MIN_ADMIN_KEY} characters")
        }
        Some(k) => Some(Handoff {
            addr: String::new(),
            token: k.to_string(),
        }),
    };
    let store: Arc<dyn Store> = Arc::new(
        RedisStore::connect(&a.redis).with_context(|| format!("connecting to {}", a.redis))?,
    );
    actix_web::rt::System::new().block_on(async move {
        let media = MediaServices::open(&a.media_store).await?;
        serve(a.redis, config, store, admin, media).await
    })
}

async fn serve(
    redis: String,
    config: Config,
    store: Arc<dyn Store>,
    admin: Option<Handoff>,
    media: MediaServices,
) -> anyhow::Result<()> {
    let node_id = format!("front-{}", crate::ids::random_hex(4)?);
    let bus: Arc<dyn Bus> = Arc::new(RedisBus::connect(&redis).await?);
    let view = Arc::new(ClusterView::new(ClusterState::connect(&redis).await?));
    let models = Arc::new(ModelCatalog::default());
    actix::spawn(Arc::clone(&view).watch(Arc::clone(&models), config.clone()));
    let inboxes = NodeInboxes::new(Arc::clone(&bus), &node_id);
    let billing = Arc::new(Billing::new(store, config.billing.clone()));
    tracing::info!(node = %node_id, "front joining the cluster");
    let (runs_node, config_runs) = (node_id.clone(), config.runs.clone());
    let services = Arc::new(Services {
        node_id,
        bus,
        billing,
        hold_carries_placement: true,
        roster: view,
        inboxes,
        models,
        config,
        preparer: PreparePool::new(0, 128).context("starting the prepare threads")?,
        media: Arc::new(media),
        runs: crate::runs::Runs::new(
            Arc::new(crate::runs::log::redis::RedisRunLog::connect(&redis)?),
            &runs_node,
            config_runs,
        )?,
        templates: Arc::new(crate::workflows::templates::store::RedisTemplates::connect(
            &redis,
        )?),
    });
    crate::runs::upkeep::start(Arc::clone(&services));
    let (server, bound) = crate::front::bind(FrontState { services, admin })?;
    tracing::info!("listening on http://{bound}");
    server.await.context("the HTTP server failed")
}
