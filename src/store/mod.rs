//! Durable state: accounts with their balances, API keys (only hashes), and the ledger.
//!
//! Money moves only through [`Store`] operations that are atomic and idempotent by job id:
//! a [`Store::hold`] takes the worst-case cost off the balance before a job is dispatched,
//! and [`Store::settle`] charges what was used and returns the rest. Replaying either (a
//! retry after a timeout, a message delivered twice) changes nothing, so a fault can never
//! lose or double a ledger entry. The embedded implementation ([`embedded::RedbStore`])
//! serves `supernet serve`; the Redis one ([`redis::RedisStore`]) serves the cluster, where
//! several fronts bill one account at once.
//!
//! A hold is open on a lease: the session that placed it renews it while its job runs, and
//! [`reap_expired`] releases holds whose session died with its front (or its process).

#[cfg(test)]
mod conformance;
pub mod embedded;
pub mod redis;
pub mod redis_pool;

use serde::{Deserialize, Serialize};

use crate::bus::Outbox;
use crate::clock::unix_secs;
use crate::money::Amount;

/// What an account pays with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    Spark,
    Sogni,
}

impl TokenType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Spark => "spark",
            Self::Sogni => "sogni",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balances {
    pub spark: Amount,
    pub sogni: Amount,
}

impl Balances {
    pub fn get(&self, t: TokenType) -> Amount {
        match t {
            TokenType::Spark => self.spark,
            TokenType::Sogni => self.sogni,
        }
    }

    fn get_mut(&mut self, t: TokenType) -> &mut Amount {
        match t {
            TokenType::Spark => &mut self.spark,
            TokenType::Sogni => &mut self.sogni,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub name: String,
    /// Unix seconds.
    pub created: i64,
    /// Spendable now: held amounts are already taken off.
    pub balances: Balances,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub key_id: String,
    pub account_id: String,
    pub created: i64,
    pub disabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// Money added by an operator.
    Credit,
    /// Worst-case cost taken off before a job runs.
    Hold,
    /// The part of a hold that the job used.
    Settle,
    /// The part of a hold given back.
    Release,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Global, gap-free order of entries.
    pub seq: u64,
    pub account_id: String,
    pub kind: EntryKind,
    pub token_type: TokenType,
    pub amount: Amount,
    /// The job (for holds and their settlement) or the operator's reference (credits).
    pub reference: String,
    /// The spendable balance of this token type after the entry.
    pub balance_after: Amount,
    pub at: i64,
}

/// Where a job's hold stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub job_id: String,
    pub account_id: String,
    pub token_type: TokenType,
    pub amount: Amount,
    /// `Some(charged)` once settled.
    pub settled: Option<Amount>,
    /// The worker that ran the job and earned the charge (set at settlement).
    #[serde(default)]
    pub worker_id: Option<String>,
}

/// What a worker earned for one job: the charge of its settlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Earning {
    pub worker_id: String,
    pub job_id: String,
    pub token_type: TokenType,
    pub amount: Amount,
    pub at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no account `{0}`")]
    NoAccount(String),
    #[error("no API key `{0}`")]
    NoKey(String),
    #[error("no hold for job `{0}`")]
    NoHold(String),
    #[error("insufficient {token} balance: {needed} needed, {available} available")]
    Insufficient {
        token: &'static str,
        needed: Amount,
        available: Amount,
    },
    #[error("job `{job}` already holds {held}, not {asked}")]
    HoldMismatch {
        job: String,
        held: Amount,
        asked: Amount,
    },
    #[error("invalid amount {0}: must not be negative")]
    NegativeAmount(Amount),
    #[error("settling {charged} against a hold of {held}")]
    OverCharge { charged: Amount, held: Amount },
    #[error("API key `{0}` was disabled or given a new secret")]
    KeyRevoked(String),
    #[error("{0} is in use by another process (a running `supernet serve`?)")]
    InUse(String),
    #[error("balance overflow")]
    Overflow,
    #[error("{0}")]
    Backend(String),
}

/// What a hold asks of [`Store::hold_first`].
pub struct HoldOrder<'a> {
    pub job_id: &'a str,
    pub account_id: &'a str,
    /// Tokens and the amount in each, in order of preference.
    pub tenders: &'a [(TokenType, Amount)],
    /// The key the request came with: no new hold is placed if that key has since been
    /// disabled or given a new secret ([`StoreError::KeyRevoked`]), so a front may trust a
    /// key it looked up a moment ago and still spend nothing for one revoked meanwhile.
    pub key: Option<&'a KeyProof>,
    /// Written with the new hold, or not at all (a replay writes neither); a store that
    /// cannot reach the bus's streams refuses an order with one.
    pub then: Option<&'a Outbox>,
}

/// A key as a request presented it: which key, and the hash of the secret it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProof {
    pub key_id: String,
    pub secret_hash: String,
}

impl KeyProof {
    /// Whether `stored` is still this key, enabled, with this secret.
    fn holds_for(&self, stored: &StoredKey) -> bool {
        stored.record.key_id == self.key_id
            && stored.hash == self.secret_hash
            && !stored.record.disabled
    }
}

/// A new API key: its id, and the key itself, which is shown once and never stored.
#[derive(Debug, Clone, Serialize)]
pub struct NewKey {
    pub key_id: String,
    pub api_key: String,
}

/// Seconds a hold stays open without renewal before the reaper releases it.
pub const HOLD_LEASE_SECS: i64 = 120;

/// A key as stored: the public record and the hash of its secret.
#[derive(Serialize, Deserialize)]
struct StoredKey {
    record: ApiKeyRecord,
    hash: String,
}

pub trait Store: Send + Sync {
    /// Creates an account with opening balances (each a credit entry when not zero).
    fn create_account(&self, name: &str, opening: &Balances) -> Result<Account, StoreError>;
    fn account(&self, id: &str) -> Result<Account, StoreError>;
    /// Adds `amount` to a balance; `reference` names the operation in the ledger.
    fn credit(
        &self,
        account_id: &str,
        token: TokenType,
        amount: Amount,
        reference: &str,
    ) -> Result<LedgerEntry, StoreError>;
    /// The account's newest `limit` ledger entries, newest last.
    fn ledger(&self, account_id: &str, limit: usize) -> Result<Vec<LedgerEntry>, StoreError>;

    /// Takes `amount` off the balance for job `job_id`. Idempotent: repeating the same hold
    /// returns it unchanged; a different amount for the same job is an error.
    fn hold(
        &self,
        job_id: &str,
        account_id: &str,
        token: TokenType,
        amount: Amount,
    ) -> Result<Hold, StoreError> {
        self.hold_first(&HoldOrder {
            job_id,
            account_id,
            tenders: &[(token, amount)],
            key: None,
            then: None,
        })
    }
    /// Holds the first of the order's tenders (a token and the amount in it) that its
    /// balance covers, or, when none is covered, fails as the last one does. The choice is
    /// made on the record the hold is taken from, so `auto` billing costs no separate read
    /// and cannot pick a balance that another writer emptied meanwhile. A replay returns the
    /// hold placed when it matches one of the tenders. See [`HoldOrder`] for its checks and
    /// what it writes with the hold.
    fn hold_first(&self, order: &HoldOrder<'_>) -> Result<Hold, StoreError>;
    /// Charges `charged` (at most the held amount) and gives back the rest; a charge above
    /// zero is recorded as the earning of `worker_id`, the worker that ran the job (none
    /// when the job never ran). Idempotent: settling again returns the first settlement.
    fn settle(
        &self,
        job_id: &str,
        charged: Amount,
        worker_id: Option<&str>,
    ) -> Result<Hold, StoreError>;
    fn hold_of(&self, job_id: &str) -> Result<Hold, StoreError>;
    /// Keeps an open hold open until `expires_at` (unix seconds); a settled hold is left alone.
    fn renew_hold(&self, job_id: &str, expires_at: i64) -> Result<(), StoreError>;
    /// Up to `limit` open holds whose lease ended before `now`.
    fn expired_holds(&self, now: i64, limit: usize) -> Result<Vec<String>, StoreError>;
    /// A worker's newest `limit` earnings, oldest first.
    fn earnings(&self, worker_id: &str, limit: usize) -> Result<Vec<Earning>, StoreError>;

    fn create_key(&self, account_id: &str) -> Result<NewKey, StoreError>;
    /// Replaces the key's secret; the old one stops working.
    fn regenerate_key(&self, key_id: &str) -> Result<NewKey, StoreError>;
    fn disable_key(&self, key_id: &str) -> Result<ApiKeyRecord, StoreError>;
    /// The enabled key whose secret is `api_key`, if any.
    fn authenticate(&self, api_key: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
}

/// Releases every hold whose lease has ended (its session is gone, so nothing was delivered
/// that it could bill); returns how many. Safe beside live settlements: settling is
/// idempotent, and the first settlement of a job wins.
pub fn reap_expired(store: &dyn Store) -> Result<usize, StoreError> {
    let expired = store.expired_holds(unix_secs(), 1000)?;
    for job in &expired {
        store.settle(job, Amount::ZERO, None)?;
        tracing::warn!(job = %job, "released a hold whose session stopped renewing it");
    }
    Ok(expired.len())
}

/// `prefix` and 24 random hex digits.
fn random_id(prefix: &str) -> Result<String, StoreError> {
    Ok(format!("{prefix}{}", random_hex(12)?))
}

fn random_hex(bytes: usize) -> Result<String, StoreError> {
    crate::ids::random_hex(bytes).map_err(|e| StoreError::Backend(e.to_string()))
}

/// A new API key secret (`sn-` and 48 hex digits) and its hash.
fn new_secret() -> Result<(String, String), StoreError> {
    let key = format!("sn-{}", random_hex(24)?);
    let hash = key_hash(&key);
    Ok((key, hash))
}

/// What is stored instead of a key: its SHA-256, in hex.
pub fn key_hash(key: &str) -> String {
    use sha2::{Digest, Sha256};
    crate::ids::hex(&Sha256::digest(key.as_bytes()))
}

/// An amount that must not be negative (credits, holds, charges).
/// The tender of [`Store::hold_first`] to take from `balances`.
fn first_covered(
    balances: &Balances,
    tenders: &[(TokenType, Amount)],
) -> Result<(TokenType, Amount), StoreError> {
    let last = *tenders
        .last()
        .ok_or_else(|| StoreError::Backend("a hold needs at least one tender".into()))?;
    for &(token, amount) in tenders {
        non_negative(amount)?;
        if balances.get(token) >= amount {
            return Ok((token, amount));
        }
    }
    Ok(last)
}

/// Whether a hold already placed is the one `tenders` asks for (a replay).
fn replays(
    hold: &Hold,
    account_id: &str,
    tenders: &[(TokenType, Amount)],
) -> Result<(), StoreError> {
    if hold.account_id == account_id
        && tenders
            .iter()
            .any(|&(t, a)| hold.token_type == t && hold.amount == a)
    {
        return Ok(());
    }
    let asked = tenders
        .iter()
        .find(|(t, _)| *t == hold.token_type)
        .or(tenders.last())
        .map_or(Amount::ZERO, |(_, a)| *a);
    Err(StoreError::HoldMismatch {
        job: hold.job_id.clone(),
        held: hold.amount,
        asked,
    })
}

fn non_negative(a: Amount) -> Result<Amount, StoreError> {
    if a.is_negative() {
        Err(StoreError::NegativeAmount(a))
    } else {
        Ok(a)
    }
}

/// The ledger arithmetic shared by every implementation: the new balance after `delta`.
fn apply(
    balances: &mut Balances,
    token: TokenType,
    delta: Amount,
    spend: bool,
) -> Result<Amount, StoreError> {
    let b = balances.get_mut(token);
    let next = if spend {
        let next = b.checked_sub(delta).ok_or(StoreError::Overflow)?;
        if next.is_negative() {
            return Err(StoreError::Insufficient {
                token: token.name(),
                needed: delta,
                available: *b,
            });
        }
        next
    } else {
        b.checked_add(delta).ok_or(StoreError::Overflow)?
    };
    *b = next;
    Ok(next)
}
