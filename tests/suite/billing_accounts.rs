//! An account's billing over a real store: a hold takes the worst case, a settlement
//! charges exactly the price of the usage and records the worker's earning, a hold the
//! balance cannot cover changes nothing, `token_type=auto` falls back to SOGNI, and per-key
//! limits answer with when to retry.

use std::sync::Arc;

use supernet::api::chat_request::TokenChoice;
use supernet::billing::accounts::{Billing, BillingError, HoldJob, SettleJob};
use supernet::billing::limits::KeyLimits;
use supernet::billing::pricing::{ModelPrice, TokenRates};
use supernet::money::Amount;
use supernet::store::embedded::RedbStore;
use supernet::store::{Balances, Store, StoreError, TokenType};

fn a(s: &str) -> Amount {
    s.parse().expect("an amount")
}

#[actix::test]
async fn holds_settle_to_the_exact_price_of_the_usage() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path()).expect("store"));
    let acct = store
        .create_account(
            "t",
            &Balances {
                spark: a("1"),
                sogni: a("0"),
            },
        )
        .expect("account");
    let key = store.create_key(&acct.id).expect("key");
    let billing = Billing::new(Arc::clone(&store), TokenRates::default());

    let presented = billing
        .authenticate(key.api_key.clone())
        .await
        .expect("auth")
        .expect("a valid key");
    let rec = presented.record.clone();
    assert_eq!(rec.account_id, acct.id);
    assert!(billing
        .authenticate("sn-wrong".into())
        .await
        .expect("auth")
        .is_none());

    let price = ModelPrice::default();
    let hold = |job: &str, max_tokens: u64, choice| HoldJob {
        job_id: job.into(),
        account_id: acct.id.clone(),
        choice,
        price: price.clone(),
        prompt_tokens: 1000,
        max_tokens,
        key: presented.proof.clone(),
        then: None,
    };
    // 1000 * 0.00006 + 500 * 0.00018 = 0.15 Spark held.
    let h = billing
        .hold(hold("j1", 500, TokenChoice::Spark))
        .await
        .expect("hold");
    assert_eq!((h.token_type, h.amount), (TokenType::Spark, a("0.15")));
    assert_eq!(
        store.account(&acct.id).expect("account").balances.spark,
        a("0.85")
    );
    // 100 tokens produced: 0.06 + 0.018 = 0.078 charged, the rest released.
    let settle = SettleJob {
        job_id: "j1".into(),
        price: price.clone(),
        prompt_tokens: 1000,
        completion_tokens: 100,
        worker_id: Some("w1".into()),
        hold: None,
    };
    let h = billing.settle(&acct.id, settle).await.expect("settle");
    assert_eq!(h.settled, Some(a("0.078")));
    assert_eq!(
        store.account(&acct.id).expect("account").balances.spark,
        a("0.922")
    );
    assert_eq!(
        store.earnings("w1", 10).expect("earnings")[0].amount,
        a("0.078")
    );

    // A hold the balance cannot cover is refused and changes nothing.
    let r = billing.hold(hold("j2", 100_000, TokenChoice::Spark)).await;
    assert!(
        matches!(r, Err(BillingError::Store(StoreError::Insufficient { .. }))),
        "{r:?}"
    );
    assert_eq!(
        store.account(&acct.id).expect("account").balances.spark,
        a("0.922")
    );

    // Auto: Spark cannot cover it, SOGNI can.
    store
        .credit(&acct.id, TokenType::Sogni, a("100"), "top-up")
        .expect("credit");
    let h = billing
        .hold(hold("j3", 100_000, TokenChoice::Auto))
        .await
        .expect("hold");
    assert_eq!(h.token_type, TokenType::Sogni);

    // Limits are per key and released with the permit.
    let limits = KeyLimits {
        max_concurrent: 1,
        requests_per_minute: 0,
    };
    let p = billing.admit(&rec, limits).expect("admitted");
    let refused = billing.admit(&rec, limits).expect_err("over the limit");
    assert_eq!(refused.retry_after_secs, 1);
    drop(p);
    billing.admit(&rec, limits).expect("admitted again");

    // A key disabled after it was looked up may still be trusted for a moment, but holds
    // nothing: the hold checks it, and after that refusal it is looked up afresh.
    store.disable_key(&key.key_id).expect("disable");
    assert!(
        billing
            .authenticate(key.api_key.clone())
            .await
            .expect("auth")
            .is_some(),
        "trusted for a moment"
    );
    let before = store.account(&acct.id).expect("account").balances;
    let r = billing.hold(hold("j4", 10, TokenChoice::Spark)).await;
    assert!(
        matches!(r, Err(BillingError::Store(StoreError::KeyRevoked(_)))),
        "{r:?}"
    );
    assert_eq!(store.account(&acct.id).expect("account").balances, before);
    assert!(
        billing
            .authenticate(key.api_key.clone())
            .await
            .expect("auth")
            .is_none(),
        "looked up again after the refusal"
    );
}
