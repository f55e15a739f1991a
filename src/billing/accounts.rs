//! [`Billing`]: a node's money side of each request. Per account it keeps the keys'
//! request limits, holds a job's worst case before dispatch and settles the exact usage
//! after, through the [`Store`]. Store calls block (a redb commit syncs to disk), so they run
//! on the blocking pool, never on the executor, one account's one at a time
//! ([`StoreQueue`]); the store's transactions keep each balance consistent.
//!
//! An account is plain state behind a lock, not an actor. Admitting a request is a few
//! operations under that lock, and a hold or settlement goes straight to the account's
//! queue from the session's thread. An actor in between guarded nothing the lock and the
//! queue do not, and cost each request two thread hand-offs there and back on its way to
//! the first token (an account's actor lived on one HTTP thread; most sessions run on the
//! others). An account with nothing in flight for a few minutes is forgotten.
//!
//! Billing also authenticates keys, and trusts one it found valid for a few seconds:
//! looking a key up is a store round trip on every request's path, while a revoked key must
//! still never spend, which the hold guarantees by checking the key in the same step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::limits::{KeyLimits, KeyWindow, Limited, Permit};
use super::pricing::{ModelPrice, PricingError, TokenRates};
use super::store_queue::{StoreQueue, Urgency};
use crate::api::chat_request::TokenChoice;
use crate::bus::Outbox;
use crate::money::Amount;
use crate::store::{
    key_hash, ApiKeyRecord, Hold, HoldOrder, KeyProof, Store, StoreError, TokenType,
};

/// An account with nothing in flight is forgotten after this long without requests.
const IDLE_AFTER: Duration = Duration::from_secs(300);
/// How long a key found valid is trusted without asking the store again. Spending still
/// checks it: every hold carries the key's [`KeyProof`], so a key disabled or regenerated
/// meanwhile gets nothing held and its request a 401.
const KEY_TRUST: Duration = Duration::from_secs(10);
/// Tries of a settlement the store could not take (Redis restarting), about a minute in all.
const SETTLE_TRIES: u32 = 40;
/// Keys remembered at most; past this the memory starts over.
const MAX_TRUSTED_KEYS: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pricing(#[from] PricingError),
    #[error("billing is unavailable: {0}")]
    Unavailable(String),
}

/// The billing of this node's accounts.
pub struct Billing {
    store: Arc<dyn Store>,
    rates: TokenRates,
    accounts: Mutex<Accounts>,
    /// Keys found valid lately, by the hash of their secret, and when.
    trusted: Mutex<HashMap<String, (ApiKeyRecord, Instant)>>,
}

/// The accounts seen lately, and when the idle ones were last let go.
struct Accounts {
    by_id: HashMap<String, Arc<Account>>,
    swept: Instant,
}

/// One account's billing on this node.
struct Account {
    /// Its store calls, one at a time.
    queue: Arc<StoreQueue>,
    recent: Mutex<Recent>,
}

/// What one account's keys have in flight and started lately, and when it last did anything.
struct Recent {
    keys: HashMap<String, KeyWindow>,
    active: Instant,
}

impl Account {
    fn touch(&self) {
        crate::locks::lock(&self.recent).active = Instant::now();
    }

    /// Lets go of idle keys' windows; true when nothing is left and nothing happened lately.
    fn forget_idle(&self, now: Instant) -> bool {
        let mut r = crate::locks::lock(&self.recent);
        r.keys.retain(|_, w| !w.is_idle(now));
        r.keys.is_empty() && now.duration_since(r.active) >= IDLE_AFTER
    }
}

/// A key a request presented and the store knew: its record, and the proof its holds carry.
#[derive(Debug, Clone)]
pub struct Presented {
    pub record: ApiKeyRecord,
    pub proof: KeyProof,
}

impl Billing {
    pub fn new(store: Arc<dyn Store>, rates: TokenRates) -> Self {
        let accounts = Accounts {
            by_id: HashMap::new(),
            swept: Instant::now(),
        };
        Self {
            store,
            rates,
            accounts: Mutex::new(accounts),
            trusted: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The enabled key with this secret, if any. A key found valid in the last
    /// [`KEY_TRUST`] is taken without a store round trip (it is on every request's path);
    /// an unknown secret always asks the store.
    pub async fn authenticate(&self, api_key: String) -> Result<Option<Presented>, BillingError> {
        let secret_hash = key_hash(&api_key);
        let trusted = crate::locks::lock(&self.trusted)
            .get(&secret_hash)
            .filter(|(_, at)| at.elapsed() < KEY_TRUST)
            .map(|(r, _)| r.clone());
        let record = match trusted {
            Some(r) => r,
            None => {
                let store = Arc::clone(&self.store);
                let Some(r) = blocking(move || Ok(store.authenticate(&api_key)?)).await? else {
                    return Ok(None);
                };
                let mut keys = crate::locks::lock(&self.trusted);
                if keys.len() >= MAX_TRUSTED_KEYS {
                    keys.clear();
                }
                keys.insert(secret_hash.clone(), (r.clone(), Instant::now()));
                r
            }
        };
        let proof = KeyProof {
            key_id: record.key_id.clone(),
            secret_hash,
        };
        Ok(Some(Presented { record, proof }))
    }

    /// Admits one request of `key` under `limits`, or says when to retry.
    pub fn admit(&self, key: &ApiKeyRecord, limits: KeyLimits) -> Result<Permit, Limited> {
        let account = self.account(&key.account_id);
        let mut r = crate::locks::lock(&account.recent);
        let now = Instant::now();
        r.active = now;
        r.keys
            .entry(key.key_id.clone())
            .or_default()
            .admit(limits, now)
    }

    /// Holds the job's worst case; a key found revoked is no longer trusted.
    pub async fn hold(&self, m: HoldJob) -> Result<Hold, BillingError> {
        let secret_hash = m.key.secret_hash.clone();
        let account_id = m.account_id.clone();
        let held = self
            .in_store(&account_id, Urgency::First, move |store, rates| {
                let tender = |t: TokenType| {
                    m.price
                        .cost(rates, m.prompt_tokens, m.max_tokens, t)
                        .map(|a| (t, a))
                };
                // `auto` pays in Spark when the Spark balance covers the worst case, else in SOGNI.
                let tenders = match m.choice {
                    TokenChoice::Spark => vec![tender(TokenType::Spark)?],
                    TokenChoice::Sogni => vec![tender(TokenType::Sogni)?],
                    TokenChoice::Auto => vec![tender(TokenType::Spark)?, tender(TokenType::Sogni)?],
                };
                Ok(store.hold_first(&HoldOrder {
                    job_id: &m.job_id,
                    account_id: &m.account_id,
                    tenders: &tenders,
                    key: Some(&m.key),
                    then: m.then.as_ref(),
                })?)
            })
            .await;
        if let Err(BillingError::Store(StoreError::KeyRevoked(_))) = &held {
            crate::locks::lock(&self.trusted).remove(&secret_hash);
        }
        held
    }

    /// Charges what a job used (at most its hold) to the worker that ran it, and releases
    /// the rest.
    /// [`Billing::settle`], retried for about a minute while the store cannot be reached
    /// (Redis restarting): the usage is known, and billing it exactly once matters more than
    /// answering at once.
    pub async fn settle_retrying(
        &self,
        account_id: &str,
        m: SettleJob,
    ) -> Result<Hold, BillingError> {
        let mut tries = 0;
        loop {
            match self.settle(account_id, m.clone()).await {
                Err(BillingError::Store(StoreError::Backend(e))) if tries < SETTLE_TRIES => {
                    tracing::warn!(job = %m.job_id, "settling failed, retrying: {e}");
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(250 * u64::from(tries.min(8)))).await;
                }
                r => return r,
            }
        }
    }

    pub async fn settle(&self, account_id: &str, m: SettleJob) -> Result<Hold, BillingError> {
        self.in_store(account_id, Urgency::Later, move |store, rates| {
            let hold = match m.hold {
                Some(h) => h,
                None => store.hold_of(&m.job_id)?,
            };
            let used =
                m.price
                    .cost(rates, m.prompt_tokens, m.completion_tokens, hold.token_type)?;
            let charged = used.min(hold.amount).max(Amount::ZERO);
            Ok(store.settle(&m.job_id, charged, m.worker_id.as_deref())?)
        })
        .await
    }

    /// Extends a live job's hold by another lease ([`crate::store::HOLD_LEASE_SECS`]), so
    /// the reaper leaves it alone while its session lives.
    pub async fn renew_hold(&self, job_id: &str) -> Result<(), BillingError> {
        let (store, job_id) = (Arc::clone(&self.store), job_id.to_string());
        blocking(move || {
            let until = crate::clock::unix_secs() + crate::store::HOLD_LEASE_SECS;
            Ok(store.renew_hold(&job_id, until)?)
        })
        .await
    }

    /// Releases every hold whose lease ended (its session died without settling); returns
    /// how many. Runs in one place: the leading coordinator's tick.
    pub async fn reap_expired(&self) -> Result<usize, BillingError> {
        let store = Arc::clone(&self.store);
        blocking(move || Ok(crate::store::reap_expired(store.as_ref())?)).await
    }

    /// One request's store work, queued behind the account's other store calls.
    fn in_store<T: Send + 'static>(
        &self,
        account_id: &str,
        urgency: Urgency,
        f: impl FnOnce(&dyn Store, &TokenRates) -> Result<T, BillingError> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, BillingError>> {
        let account = self.account(account_id);
        account.touch();
        account.queue.run(urgency, f)
    }

    /// The account's billing, started on first use; accounts idle for [`IDLE_AFTER`] are
    /// let go now and then.
    fn account(&self, account_id: &str) -> Arc<Account> {
        let mut accounts = crate::locks::lock(&self.accounts);
        let now = Instant::now();
        if now.duration_since(accounts.swept) >= IDLE_AFTER / 5 {
            accounts.swept = now;
            accounts.by_id.retain(|_, a| !a.forget_idle(now));
        }
        if let Some(account) = accounts.by_id.get(account_id) {
            return Arc::clone(account);
        }
        let recent = Mutex::new(Recent {
            keys: HashMap::new(),
            active: now,
        });
        let account = Arc::new(Account {
            queue: StoreQueue::new(Arc::clone(&self.store), self.rates.clone()),
            recent,
        });
        accounts
            .by_id
            .insert(account_id.to_string(), Arc::clone(&account));
        account
    }
}

/// Runs blocking store calls off the executor.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BillingError> + Send + 'static,
) -> Result<T, BillingError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(BillingError::Unavailable(format!(
            "a store call failed: {e}"
        ))),
    }
}

/// Hold the worst case of a job: its prompt plus `max_tokens` of output at `price`.
pub struct HoldJob {
    pub job_id: String,
    pub account_id: String,
    pub choice: TokenChoice,
    pub price: ModelPrice,
    pub prompt_tokens: u64,
    pub max_tokens: u64,
    /// The key of the request: nothing is held if it was revoked since it was looked up.
    pub key: KeyProof,
    /// Written with the hold, or not at all: the job's placement request, in a cluster.
    pub then: Option<Outbox>,
}

/// Charge what a job used (at most its hold) to the worker that ran it, and release the
/// rest.
#[derive(Clone)]
pub struct SettleJob {
    pub job_id: String,
    pub price: ModelPrice,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// None when the job never ran.
    pub worker_id: Option<String>,
    /// The hold as placed, when the caller has it (saves reading it back).
    pub hold: Option<Hold>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::RedbStore;

    #[test]
    fn an_account_is_let_go_only_when_idle() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path()).expect("store"));
        let billing = Billing::new(store, TokenRates::default());
        let key = ApiKeyRecord {
            key_id: "k1".into(),
            account_id: "a1".into(),
            created: 0,
            disabled: false,
        };
        let permit = billing.admit(&key, KeyLimits::default()).expect("admitted");
        let account = billing.account("a1");
        let later = Instant::now() + IDLE_AFTER + Duration::from_secs(61);
        assert!(!account.forget_idle(later), "a request is in flight");
        drop(permit);
        assert!(
            account.forget_idle(later),
            "nothing in flight, nothing lately"
        );
        assert!(!account.forget_idle(Instant::now()), "active a moment ago");
    }
}
