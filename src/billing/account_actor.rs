//! The BillingAccountActor: one per active account. It owns the account's per-key request
//! limits, prices jobs, places a hold for the worst case before dispatch and settles the
//! exact usage after, through the [`Store`]. Store calls block (a redb commit syncs to
//! disk), so they run on the blocking pool, never on the executor, one account's one at a
//! time ([`StoreQueue`]); the store's transactions keep each balance consistent.
//!
//! [`Billing`] hands out the actor of an account: started on first use, stopped after a
//! few idle minutes, started again when the account comes back. It also authenticates
//! keys, and trusts one it found valid for a few seconds: looking a key up is a store round
//! trip on every request's path, while a revoked key must still never spend, which the hold
//! guarantees by checking the key in the same step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::{Actor, ActorContext, Addr, AsyncContext, Context, Handler, MailboxError, Message, ResponseFuture};

use super::amount::Amount;
use super::limits::{KeyLimits, KeyWindow, Limited, Permit};
use super::pricing::{ModelPrice, PricingError, TokenRates};
use super::store_queue::StoreQueue;
use crate::api::chat_request::TokenChoice;
use crate::bus::Outbox;
use crate::store::{key_hash, ApiKeyRecord, Hold, HoldOrder, KeyProof, Store, StoreError, TokenType};

/// An account actor with nothing in flight stops after this long without requests.
const IDLE_AFTER: Duration = Duration::from_secs(300);
/// How long a key found valid is trusted without asking the store again. Spending still
/// checks it: every hold carries the key's [`KeyProof`], so a key disabled or regenerated
/// meanwhile gets nothing held and its request a 401.
const KEY_TRUST: Duration = Duration::from_secs(10);
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

/// The billing actors of this node, by account.
pub struct Billing {
    store: Arc<dyn Store>,
    rates: TokenRates,
    accounts: Mutex<HashMap<String, Addr<BillingAccountActor>>>,
    /// Keys found valid lately, by the hash of their secret, and when.
    trusted: Mutex<HashMap<String, (ApiKeyRecord, Instant)>>,
}

/// A key a request presented and the store knew: its record, and the proof its holds carry.
#[derive(Debug, Clone)]
pub struct Presented {
    pub record: ApiKeyRecord,
    pub proof: KeyProof,
}

impl Billing {
    pub fn new(store: Arc<dyn Store>, rates: TokenRates) -> Self {
        Self { store, rates, accounts: Mutex::new(HashMap::new()), trusted: Mutex::new(HashMap::new()) }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The enabled key with this secret, if any. A key found valid in the last
    /// [`KEY_TRUST`] is taken without a store round trip (it is on every request's path);
    /// an unknown secret always asks the store.
    pub async fn authenticate(&self, api_key: String) -> Result<Option<Presented>, BillingError> {
        let secret_hash = key_hash(&api_key);
        let trusted = self.trusted.lock().unwrap_or_else(PoisonError::into_inner).get(&secret_hash).filter(|(_, at)| at.elapsed() < KEY_TRUST).map(|(r, _)| r.clone());
        let record = match trusted {
            Some(r) => r,
            None => {
                let store = Arc::clone(&self.store);
                let Some(r) = blocking(move || Ok(store.authenticate(&api_key)?)).await? else { return Ok(None) };
                let mut keys = self.trusted.lock().unwrap_or_else(PoisonError::into_inner);
                if keys.len() >= MAX_TRUSTED_KEYS {
                    keys.clear();
                }
                keys.insert(secret_hash.clone(), (r.clone(), Instant::now()));
                r
            }
        };
        let proof = KeyProof { key_id: record.key_id.clone(), secret_hash };
        Ok(Some(Presented { record, proof }))
    }

    /// Admits one request of `key` under `limits`, or says when to retry.
    pub async fn admit(&self, key: &ApiKeyRecord, limits: KeyLimits) -> Result<Result<Permit, Limited>, BillingError> {
        self.ask(&key.account_id, Admit { key_id: key.key_id.clone(), limits }).await
    }

    /// Holds the job's worst case; a key found revoked is no longer trusted.
    pub async fn hold(&self, job: HoldJob) -> Result<Hold, BillingError> {
        let secret_hash = job.key.secret_hash.clone();
        let held = self.ask(&job.account_id.clone(), job).await?;
        if let Err(BillingError::Store(StoreError::KeyRevoked(_))) = &held {
            self.trusted.lock().unwrap_or_else(PoisonError::into_inner).remove(&secret_hash);
        }
        held
    }

    pub async fn settle(&self, account_id: &str, job: SettleJob) -> Result<Hold, BillingError> {
        self.ask(account_id, job).await?
    }

    /// Sends to the account's actor, starting one if it has none (or its last one stopped
    /// while the message was on its way).
    async fn ask<M>(&self, account_id: &str, msg: M) -> Result<M::Result, BillingError>
    where
        M: Message + Clone + Send + 'static,
        M::Result: Send,
        BillingAccountActor: Handler<M>,
        <BillingAccountActor as Actor>::Context: ToEnvelope<BillingAccountActor, M>,
    {
        let mut last = MailboxError::Closed;
        for _ in 0..2 {
            match self.actor(account_id).send(msg.clone()).await {
                Ok(r) => return Ok(r),
                Err(e) => last = e,
            }
        }
        Err(BillingError::Unavailable(last.to_string()))
    }

    fn actor(&self, account_id: &str) -> Addr<BillingAccountActor> {
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(a) = accounts.get(account_id).filter(|a| a.connected()) {
            return a.clone();
        }
        accounts.retain(|_, a| a.connected());
        let actor = BillingAccountActor { queue: StoreQueue::new(Arc::clone(&self.store), self.rates.clone()), keys: HashMap::new(), last_active: Instant::now() };
        let addr = actor.start();
        accounts.insert(account_id.to_string(), addr.clone());
        addr
    }
}

/// Runs blocking store calls off the executor.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, BillingError> + Send + 'static) -> Result<T, BillingError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(BillingError::Unavailable(format!("a store call failed: {e}"))),
    }
}

pub struct BillingAccountActor {
    queue: Arc<StoreQueue>,
    keys: HashMap<String, KeyWindow>,
    last_active: Instant,
}

impl BillingAccountActor {
    /// One request's store work, queued behind the account's other store calls (see
    /// [`StoreQueue`]); the actor itself stays free for `Admit`.
    fn in_store<T: Send + 'static>(&mut self, f: impl FnOnce(&dyn Store, &TokenRates) -> Result<T, BillingError> + Send + 'static) -> ResponseFuture<Result<T, BillingError>> {
        self.last_active = Instant::now();
        Box::pin(self.queue.run(f))
    }
}

impl Actor for BillingAccountActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(IDLE_AFTER / 5, |act, ctx| {
            let now = Instant::now();
            act.keys.retain(|_, w| !w.is_idle(now));
            if act.keys.is_empty() && now.duration_since(act.last_active) >= IDLE_AFTER {
                ctx.stop();
            }
        });
    }
}

#[derive(Message, Clone)]
#[rtype(result = "Result<Permit, Limited>")]
struct Admit {
    key_id: String,
    limits: KeyLimits,
}

impl Handler<Admit> for BillingAccountActor {
    type Result = Result<Permit, Limited>;

    fn handle(&mut self, msg: Admit, _: &mut Context<Self>) -> Self::Result {
        self.last_active = Instant::now();
        self.keys.entry(msg.key_id).or_default().admit(msg.limits, self.last_active)
    }
}

/// Hold the worst case of a job: its prompt plus `max_tokens` of output at `price`.
#[derive(Message, Clone)]
#[rtype(result = "Result<Hold, BillingError>")]
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

impl Handler<HoldJob> for BillingAccountActor {
    type Result = ResponseFuture<Result<Hold, BillingError>>;

    fn handle(&mut self, m: HoldJob, _: &mut Context<Self>) -> Self::Result {
        self.in_store(move |store, rates| {
            let tender = |t: TokenType| m.price.cost(rates, m.prompt_tokens, m.max_tokens, t).map(|a| (t, a));
            // `auto` pays in Spark when the Spark balance covers the worst case, else in SOGNI.
            let tenders = match m.choice {
                TokenChoice::Spark => vec![tender(TokenType::Spark)?],
                TokenChoice::Sogni => vec![tender(TokenType::Sogni)?],
                TokenChoice::Auto => vec![tender(TokenType::Spark)?, tender(TokenType::Sogni)?],
            };
            Ok(store.hold_first(&HoldOrder { job_id: &m.job_id, account_id: &m.account_id, tenders: &tenders, key: Some(&m.key), then: m.then.as_ref() })?)
        })
    }
}

/// Charge what a job used (at most its hold) to the worker that ran it, and release the
/// rest.
#[derive(Message, Clone)]
#[rtype(result = "Result<Hold, BillingError>")]
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

impl Handler<SettleJob> for BillingAccountActor {
    type Result = ResponseFuture<Result<Hold, BillingError>>;

    fn handle(&mut self, m: SettleJob, _: &mut Context<Self>) -> Self::Result {
        self.in_store(move |store, rates| {
            let hold = match m.hold {
                Some(h) => h,
                None => store.hold_of(&m.job_id)?,
            };
            let used = m.price.cost(rates, m.prompt_tokens, m.completion_tokens, hold.token_type)?;
            let charged = used.min(hold.amount).max(Amount::ZERO);
            Ok(store.settle(&m.job_id, charged, m.worker_id.as_deref())?)
        })
    }
}
