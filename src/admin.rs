//! Operator commands on accounts and API keys, run against the store directly or, while a
//! `supernet serve` holds the data dir, through that server.
//!
//! The embedded store is one redb file that one process at a time may open. So a running
//! server writes `admin.json` (its local address and a fresh secret token, readable only by
//! its owner) into the data dir, and `supernet admin` sends its command there when it finds
//! the store in use. Whoever may read the data dir may administer it, either way; the
//! server removes the file when it stops.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::money::Amount;
use crate::store::{Balances, Store, TokenType};

/// Ledger entries `accounts show` prints.
/// The file a running server leaves in its data dir.
pub const HANDOFF_FILE: &str = "admin.json";
/// The path of the server's admin endpoint.
pub const ENDPOINT: &str = "/admin/v1/commands";

#[derive(Subcommand, Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminCommand {
    /// Create, credit and inspect accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Create, regenerate and disable API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// List, drain and resume the workers of the running server.
    #[command(subcommand)]
    Workers(WorkersCommand),
}

impl AdminCommand {
    /// Whether only a running server can carry it out (it concerns live workers).
    pub fn needs_server(&self) -> bool {
        matches!(self, Self::Workers(_))
    }
}

#[derive(Subcommand, Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
        /// How many of the newest ledger entries to print.
        #[arg(long, default_value_t = 50)]
        entries: usize,
    },
}

#[derive(Subcommand, Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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

#[derive(Subcommand, Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkersCommand {
    /// Print each worker with its model, load and drain state.
    List,
    /// Stop giving a worker new jobs; the jobs it has finish. A model with no undrained
    /// worker gets 503 until one resumes.
    Drain {
        #[arg(long)]
        worker_id: String,
    },
    /// Give a drained worker jobs again.
    Resume {
        #[arg(long)]
        worker_id: String,
    },
}

/// Runs a command on the store; the result is the JSON object the command prints.
pub fn execute(store: &dyn Store, command: AdminCommand) -> anyhow::Result<Value> {
    Ok(match command {
        AdminCommand::Accounts(AccountsCommand::Create { name, spark, sogni }) => {
            let acct = store.create_account(&name, &Balances { spark, sogni })?;
            json!({ "account_id": acct.id })
        }
        AdminCommand::Accounts(AccountsCommand::Credit {
            account,
            spark,
            sogni,
            reference,
        }) => {
            anyhow::ensure!(
                spark.is_some() || sogni.is_some(),
                "give --spark, --sogni or both"
            );
            let mut entries = Vec::new();
            for (token, amount) in [(TokenType::Spark, spark), (TokenType::Sogni, sogni)] {
                if let Some(amount) = amount {
                    entries.push(store.credit(&account, token, amount, &reference)?);
                }
            }
            json!({ "account_id": account, "entries": entries })
        }
        AdminCommand::Accounts(AccountsCommand::Show { account, entries }) => {
            let acct = store.account(&account)?;
            json!({
                "account_id": acct.id,
                "name": acct.name,
                "created": acct.created,
                "balances": acct.balances,
                "ledger": store.ledger(&account, entries)?,
            })
        }
        AdminCommand::Keys(KeysCommand::Create { account }) => {
            serde_json::to_value(store.create_key(&account)?)?
        }
        AdminCommand::Keys(KeysCommand::Regenerate { key_id }) => {
            serde_json::to_value(store.regenerate_key(&key_id)?)?
        }
        AdminCommand::Keys(KeysCommand::Disable { key_id }) => {
            serde_json::to_value(store.disable_key(&key_id)?)?
        }
        AdminCommand::Workers(_) => bail!("`workers` commands need a running server"),
    })
}

/// Where a running server takes admin commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handoff {
    /// `host:port` on the local machine.
    pub addr: String,
    pub token: String,
}

impl Handoff {
    /// A fresh token for a server listening on `addr`.
    pub fn new(addr: String) -> anyhow::Result<Self> {
        Ok(Self {
            addr,
            token: crate::ids::random_hex(24)?,
        })
    }

    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(HANDOFF_FILE)
    }

    /// Writes the file, readable by its owner only.
    pub fn write(&self, data_dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(data_dir);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        f.write_all(serde_json::to_string(self)?.as_bytes())?;
        Ok(())
    }

    /// Whether `presented` is this token (compared in constant time).
    pub fn accepts(&self, presented: &str) -> bool {
        let (a, b) = (self.token.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Sends `command` to the server that holds `data_dir`.
pub fn via_server(data_dir: &Path, command: &AdminCommand) -> anyhow::Result<Value> {
    let path = Handoff::path(data_dir);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no running server found: {} (left by one) cannot be read",
            path.display()
        )
    })?;
    let h: Handoff =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    let body = serde_json::to_string(command)?;
    let mut conn = TcpStream::connect(&h.addr).with_context(|| {
        format!(
            "the server at {} (from {}) does not answer",
            h.addr,
            path.display()
        )
    })?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        conn,
        "POST {ENDPOINT} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        h.addr,
        h.token,
        body.len()
    )?;
    let mut response = Vec::new();
    conn.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("a malformed response from the server")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    let v: Value = serde_json::from_str(body)
        .with_context(|| format!("the server answered {status}: {body}"))?;
    if status != "200" {
        bail!("{}", v["error"]["message"].as_str().unwrap_or(body));
    }
    Ok(v)
}
