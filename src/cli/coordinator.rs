//! `supernet coordinator --redis URL`: one of the cluster's coordinators. Run two or more;
//! they elect a leader through a Redis lease and the others stand by. The same
//! [`CoordinatorActor`] as `supernet serve`'s, led by the lease.

use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use anyhow::Context;
use clap::Args;

use super::{metrics_addr, shutdown_signal};
use crate::billing::accounts::Billing;
use crate::bus::redis::RedisBus;
use crate::cluster::state::{ClusterState, Leased};
use crate::config::MAX_WAITING;
use crate::coordinator::placer::Settings;
use crate::coordinator::{CoordinatorActor, PoolSnapshot};
use crate::store::redis::RedisStore;
use crate::telemetry::{metrics_http, snapshot};

#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    /// The cluster's Redis, e.g. redis://host:6379/0 (credentials in the URL).
    #[arg(long, env = "SUPERNET_REDIS")]
    pub redis: String,
    /// Milliseconds of the leader lease: a standby takes over at most this long after the
    /// leader dies.
    #[arg(long, default_value_t = 3000)]
    pub lease_ms: u64,
    /// Milliseconds without a heartbeat after which a worker is declared dead and its jobs
    /// move.
    #[arg(long, default_value_t = 3000)]
    pub dead_after_ms: u64,
    /// Jobs one account may have in flight at once; more wait (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_jobs_per_account: usize,
    /// Jobs that may wait for a worker at once; beyond, requests get 429 with Retry-After.
    #[arg(long, default_value_t = MAX_WAITING)]
    pub max_queue: usize,
    /// Place jobs on simulated workers (`supernet worker --simulate`) too. For load tests
    /// of the control plane only: never on a cluster that serves real traffic.
    #[arg(long, env = "SUPERNET_ALLOW_SIMULATED")]
    pub allow_simulated: bool,
    /// Where to serve /metrics and /healthz [default: a free port on 127.0.0.1, logged].
    #[arg(long, env = "SUPERNET_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
}

pub fn run(a: CoordinatorArgs) -> anyhow::Result<()> {
    let store = Arc::new(
        RedisStore::connect(&a.redis).with_context(|| format!("connecting to {}", a.redis))?,
    );
    // Billing here only reaps expired holds; rates do not matter to that.
    let billing = Arc::new(Billing::new(store, Default::default()));
    let settings = Settings {
        dead_after: Duration::from_millis(a.dead_after_ms),
        max_jobs_per_account: a.max_jobs_per_account,
        allow_simulated: a.allow_simulated,
        max_queue: a.max_queue,
    };
    actix::System::new().block_on(async move {
        let node_id = format!("coord-{}", crate::ids::random_hex(4)?);
        let bus = Arc::new(RedisBus::connect(&a.redis).await?);
        let lead = Arc::new(Leased {
            state: ClusterState::connect(&a.redis).await?,
            ttl: Duration::from_millis(a.lease_ms),
        });
        tracing::info!(node = %node_id, "coordinator started; standing by for the lease");
        if a.allow_simulated {
            tracing::warn!(node = %node_id, "simulation allowed: jobs may be placed on simulated workers (placeholder tokens)");
        }
        crate::telemetry::metrics::coordinator();
        let coordinator = CoordinatorActor::new(node_id, bus, lead, billing, settings).start();
        metrics_http::start(
            metrics_addr(a.metrics_addr.as_deref()),
            Arc::new(move || {
                let pool = coordinator.clone();
                Box::pin(async move {
                    let mut out = String::new();
                    snapshot::pool(&mut out, &pool.send(PoolSnapshot).await.unwrap_or_default());
                    out
                })
            }),
        )?;
        shutdown_signal().await;
        Ok(())
    })
}
