//! What a client is told when its turn's billing hold is refused: the balance that falls
//! short and by how much, a revoked key, or an internal error (logged); each counted in
//! `billing_holds` by outcome.

use crate::api::chat_request::TokenChoice;
use crate::api::error::ApiError;
use crate::billing::accounts::BillingError;
use crate::store::StoreError;
use crate::telemetry::metrics::front as metrics;

/// Why the hold was refused, for the client.
pub fn hold_refused(
    e: BillingError,
    choice: TokenChoice,
    prompt_tokens: u64,
    max_tokens: u64,
) -> ApiError {
    let outcome = |o: &str| metrics().billing_holds.with_label_values(&[o]).inc();
    match e {
        BillingError::Store(StoreError::Insufficient {
            token,
            needed,
            available,
        }) => {
            outcome("insufficient");
            let which = if choice == TokenChoice::Auto {
                "neither the Spark nor the SOGNI balance covers".to_string()
            } else {
                format!("the {token} balance does not cover")
            };
            ApiError::insufficient_balance(format!(
                "Insufficient balance: {which} this request, which can cost up to {needed} {token} \
                 ({prompt_tokens} prompt tokens and up to {max_tokens} completion tokens; {available} {token} available). \
                 Lower max_tokens or add credit."
            ))
        }
        BillingError::Store(StoreError::KeyRevoked(_)) => {
            outcome("revoked");
            ApiError::unauthorized("Incorrect API key provided")
        }
        e => {
            outcome("failed");
            ApiError::logged("the hold", e)
        }
    }
}
