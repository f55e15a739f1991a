//! The BillingAccountActor: prices a job, places its hold before dispatch and settles its
//! usage after, through the [`Store`]. Store calls block (a redb commit syncs to disk), so
//! these actors run on their own threads in a `SyncArbiter`, never on the async executor;
//! the store's transactions keep each account consistent whichever thread serves it.

use std::sync::Arc;

use actix::{Actor, Handler, Message, SyncContext};

use super::amount::Amount;
use super::pricing::{auto_token, ModelPrice, PricingError, TokenRates};
use crate::api::chat_request::TokenChoice;
use crate::store::{ApiKeyRecord, Hold, Store, StoreError, TokenType};

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pricing(#[from] PricingError),
}

pub struct BillingAccountActor {
    store: Arc<dyn Store>,
    rates: TokenRates,
}

impl BillingAccountActor {
    pub fn new(store: Arc<dyn Store>, rates: TokenRates) -> Self {
        Self { store, rates }
    }
}

impl Actor for BillingAccountActor {
    type Context = SyncContext<Self>;
}

/// The enabled key with this secret, if any.
#[derive(Message)]
#[rtype(result = "Result<Option<ApiKeyRecord>, BillingError>")]
pub struct Authenticate(pub String);

impl Handler<Authenticate> for BillingAccountActor {
    type Result = Result<Option<ApiKeyRecord>, BillingError>;

    fn handle(&mut self, msg: Authenticate, _: &mut SyncContext<Self>) -> Self::Result {
        Ok(self.store.authenticate(&msg.0)?)
    }
}

/// Hold the worst case of a job: its prompt plus `max_tokens` of output at `price`.
#[derive(Message)]
#[rtype(result = "Result<Hold, BillingError>")]
pub struct HoldJob {
    pub job_id: String,
    pub account_id: String,
    pub choice: TokenChoice,
    pub price: ModelPrice,
    pub prompt_tokens: u64,
    pub max_tokens: u64,
}

impl Handler<HoldJob> for BillingAccountActor {
    type Result = Result<Hold, BillingError>;

    fn handle(&mut self, m: HoldJob, _: &mut SyncContext<Self>) -> Self::Result {
        let cost = |t: TokenType| m.price.cost(&self.rates, m.prompt_tokens, m.max_tokens, t);
        let token = match m.choice {
            TokenChoice::Spark => TokenType::Spark,
            TokenChoice::Sogni => TokenType::Sogni,
            TokenChoice::Auto => auto_token(&self.store.account(&m.account_id)?.balances, cost(TokenType::Spark)?),
        };
        Ok(self.store.hold(&m.job_id, &m.account_id, token, cost(token)?)?)
    }
}

/// Charge what a job used (at most its hold) and release the rest.
#[derive(Message)]
#[rtype(result = "Result<Hold, BillingError>")]
pub struct SettleJob {
    pub job_id: String,
    pub price: ModelPrice,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Handler<SettleJob> for BillingAccountActor {
    type Result = Result<Hold, BillingError>;

    fn handle(&mut self, m: SettleJob, _: &mut SyncContext<Self>) -> Self::Result {
        let hold = self.store.hold_of(&m.job_id)?;
        let used = m.price.cost(&self.rates, m.prompt_tokens, m.completion_tokens, hold.token_type)?;
        Ok(self.store.settle(&m.job_id, used.min(hold.amount).max(Amount::ZERO))?)
    }
}
