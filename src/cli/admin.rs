//! `supernet admin`: accounts, credits and API keys in the store under `--data-dir`. Every
//! command prints one JSON object, so scripts can read it.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::billing::amount::Amount;
use crate::store::embedded::RedbStore;
use crate::store::{Balances, Store, TokenType};

/// Ledger entries `accounts show` prints.
const SHOWN_ENTRIES: usize = 50;

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The data directory of the store (the same as `serve`'s). While a server holds it,
    /// stop the server first: the store file is locked by one process at a time.
    #[arg(long, env = "SUPERNET_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create, credit and inspect accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Create, regenerate and disable API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand, Debug)]
pub enum AccountsCommand {
    /// Create an account; prints {"account_id":"..."}.
    Create {
        #[arg(long)]
        name: String,
        /// Opening Spark balance (a decimal, e.g. 100 or 0.5).
        #[arg(long, default_value = "0")]
        spark: Amount,
        /// Opening SOGNI balance.
        #[arg(long, default_value = "0")]
        sogni: Amount,
    },
    /// Add to an account's balances; prints the ledger entries made.
    Credit {
        #[arg(long)]
        account: String,
        #[arg(long)]
        spark: Option<Amount>,
        #[arg(long)]
        sogni: Option<Amount>,
        /// What the credit is for, kept in the ledger.
        #[arg(long, default_value = "admin credit")]
        reference: String,
    },
    /// Print an account's balances and its recent ledger entries.
    Show {
        #[arg(long)]
        account: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key for an account; prints {"key_id","api_key"}. The key is shown only once.
    Create {
        #[arg(long)]
        account: String,
    },
    /// Replace a key's secret; the old secret stops working. Prints the new one once.
    Regenerate {
        #[arg(long)]
        key_id: String,
    },
    /// Disable a key for good.
    Disable {
        #[arg(long)]
        key_id: String,
    },
}

pub fn run(a: AdminArgs) -> anyhow::Result<()> {
    let store = RedbStore::open(&a.data_dir).with_context(|| format!("opening the store in {}", a.data_dir.display()))?;
    let out = match a.command {
        AdminCommand::Accounts(c) => accounts(&store, c)?,
        AdminCommand::Keys(c) => keys(&store, c)?,
    };
    println!("{out}");
    Ok(())
}

fn accounts(store: &dyn Store, c: AccountsCommand) -> anyhow::Result<serde_json::Value> {
    Ok(match c {
        AccountsCommand::Create { name, spark, sogni } => {
            let acct = store.create_account(&name, &Balances { spark, sogni })?;
            json!({ "account_id": acct.id })
        }
        AccountsCommand::Credit { account, spark, sogni, reference } => {
            anyhow::ensure!(spark.is_some() || sogni.is_some(), "give --spark, --sogni or both");
            let mut entries = Vec::new();
            for (token, amount) in [(TokenType::Spark, spark), (TokenType::Sogni, sogni)] {
                if let Some(amount) = amount {
                    entries.push(store.credit(&account, token, amount, &reference)?);
                }
            }
            json!({ "account_id": account, "entries": entries })
        }
        AccountsCommand::Show { account } => {
            let acct = store.account(&account)?;
            json!({
                "account_id": acct.id,
                "name": acct.name,
                "created": acct.created,
                "balances": acct.balances,
                "ledger": store.ledger(&account, SHOWN_ENTRIES)?,
            })
        }
    })
}

fn keys(store: &dyn Store, c: KeysCommand) -> anyhow::Result<serde_json::Value> {
    Ok(match c {
        KeysCommand::Create { account } => serde_json::to_value(store.create_key(&account)?)?,
        KeysCommand::Regenerate { key_id } => serde_json::to_value(store.regenerate_key(&key_id)?)?,
        KeysCommand::Disable { key_id } => serde_json::to_value(store.disable_key(&key_id)?)?,
    })
}
