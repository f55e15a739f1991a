//! `supernet admin`: accounts, credits and API keys in the store under `--data-dir`. Every
//! command prints one JSON object, so scripts can read it. While a server holds the data
//! dir, the command goes through that server (see [`crate::admin`]). With `--redis` it
//! works on a cluster's store instead.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::admin::{execute, via_server, AdminCommand};
use crate::store::embedded::RedbStore;
use crate::store::redis::RedisStore;
use crate::store::StoreError;

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The data directory of the store (the same as `serve`'s). Works while a server runs
    /// on it, too: the command then goes through that server.
    #[arg(long, env = "SUPERNET_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// A cluster's Redis (e.g. redis://host:6379/0): work on its store instead.
    #[arg(long, env = "SUPERNET_REDIS")]
    pub redis: Option<String>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

pub fn run(a: AdminArgs) -> anyhow::Result<()> {
    let out = if let Some(url) = &a.redis {
        anyhow::ensure!(!a.command.needs_server(), "`workers` commands act on a running `supernet serve`; in a cluster, stop a worker with SIGTERM to drain it");
        execute(
            &RedisStore::connect(url).with_context(|| format!("connecting to {url}"))?,
            a.command,
        )?
    } else if a.command.needs_server() {
        via_server(&a.data_dir, &a.command)?
    } else {
        match RedbStore::open(&a.data_dir) {
            Ok(store) => execute(&store, a.command)?,
            Err(StoreError::InUse(_)) => via_server(&a.data_dir, &a.command)?,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("opening the store in {}", a.data_dir.display()))
            }
        }
    };
    // A closed pipe (`| head`) is the reader's choice, not an error.
    let _ = writeln!(std::io::stdout(), "{out}");
    Ok(())
}
