//! The behaviour every [`Store`] must have, written once: the embedded store runs it here,
//! and the Redis store runs the same checks.

use super::*;

fn a(s: &str) -> Amount {
    s.parse().expect("an amount")
}

fn balances(spark: &str, sogni: &str) -> Balances {
    Balances {
        spark: a(spark),
        sogni: a(sogni),
    }
}

fn order<'a>(
    job_id: &'a str,
    account_id: &'a str,
    tenders: &'a [(TokenType, Amount)],
    key: Option<&'a KeyProof>,
    then: Option<&'a Outbox>,
) -> HoldOrder<'a> {
    HoldOrder {
        job_id,
        account_id,
        tenders,
        key,
        then,
    }
}

/// Runs every check against a fresh, empty store.
pub fn run(store: &dyn Store) {
    accounts_and_credits(store);
    holds_take_the_worst_case_and_settle_the_rest(store);
    holds_and_settlements_are_idempotent(store);
    holds_take_the_first_covered_tender(store);
    bad_money_changes_nothing(store);
    keys_are_hashed_regenerated_and_disabled(store);
    holds_check_the_key_they_were_asked_with(store);
    holds_left_open_expire(store);
}

fn holds_left_open_expire(store: &dyn Store) {
    let acct = store
        .create_account("gina", &balances("1", "0"))
        .expect("create");
    store
        .hold("job-5", &acct.id, TokenType::Spark, a("0.4"))
        .expect("hold");
    store
        .hold("job-6", &acct.id, TokenType::Spark, a("0.1"))
        .expect("hold");
    store.settle("job-6", a("0.1"), None).expect("settle");
    let later = unix_secs() + HOLD_LEASE_SECS + 1;
    assert!(
        store
            .expired_holds(unix_secs(), 10)
            .expect("expired")
            .is_empty(),
        "a fresh hold has not expired"
    );
    // (Earlier checks left job-4 open too.)
    let expired = |at| store.expired_holds(at, 10).expect("expired");
    assert!(
        expired(later).contains(&"job-5".to_string())
            && !expired(later).contains(&"job-6".to_string()),
        "only open holds expire"
    );
    store.renew_hold("job-5", later + 60).expect("renew");
    store
        .renew_hold("job-6", later + 60)
        .expect("renewing a settled hold does nothing");
    assert!(
        !expired(later).contains(&"job-5".to_string()),
        "a renewed hold has not expired"
    );
    assert!(expired(later + 61).contains(&"job-5".to_string()));
    store.settle("job-5", a("0"), None).expect("release");
    assert!(!expired(later + 61).contains(&"job-5".to_string()));
    assert_eq!(
        store.account(&acct.id).expect("account").balances.spark,
        a("0.9")
    );
}

fn accounts_and_credits(store: &dyn Store) {
    let acct = store
        .create_account("alice", &balances("10", "0"))
        .expect("create");
    assert_eq!(store.account(&acct.id).expect("read back"), acct);
    assert_eq!(acct.balances, balances("10", "0"));
    let e = store
        .credit(&acct.id, TokenType::Sogni, a("2.5"), "top-up 1")
        .expect("credit");
    assert_eq!((e.kind, e.balance_after), (EntryKind::Credit, a("2.5")));
    let ledger = store.ledger(&acct.id, 10).expect("ledger");
    assert_eq!(
        ledger
            .iter()
            .map(|e| e.reference.as_str())
            .collect::<Vec<_>>(),
        ["opening balance", "top-up 1"]
    );
    assert_eq!(store.ledger(&acct.id, 1).expect("ledger").len(), 1);
    assert!(matches!(
        store.account("acct_missing"),
        Err(StoreError::NoAccount(_))
    ));
}

fn holds_take_the_worst_case_and_settle_the_rest(store: &dyn Store) {
    let acct = store
        .create_account("bob", &balances("1", "0"))
        .expect("create");
    let h = store
        .hold("job-1", &acct.id, TokenType::Spark, a("0.3"))
        .expect("hold");
    assert_eq!(h.settled, None);
    assert_eq!(
        store.account(&acct.id).expect("account").balances.spark,
        a("0.7")
    );
    let h = store
        .settle("job-1", a("0.12"), Some("w-1"))
        .expect("settle");
    assert_eq!(h.settled, Some(a("0.12")));
    assert_eq!(
        store.account(&acct.id).expect("account").balances.spark,
        a("0.88")
    );
    let kinds: Vec<_> = store
        .ledger(&acct.id, 10)
        .expect("ledger")
        .iter()
        .map(|e| (e.kind, e.amount))
        .collect();
    assert_eq!(
        kinds,
        [
            (EntryKind::Credit, a("1")),
            (EntryKind::Hold, a("0.3")),
            (EntryKind::Settle, a("0.12")),
            (EntryKind::Release, a("0.18"))
        ]
    );
    // The worker earned the charge, once.
    assert_eq!(
        store.hold_of("job-1").expect("hold").worker_id.as_deref(),
        Some("w-1")
    );
    store
        .settle("job-1", a("0.12"), Some("w-1"))
        .expect("replayed settle");
    let earned: Vec<_> = store
        .earnings("w-1", 10)
        .expect("earnings")
        .iter()
        .map(|e| (e.job_id.clone(), e.amount))
        .collect();
    assert_eq!(earned, [("job-1".to_string(), a("0.12"))]);
    assert!(store.earnings("w-2", 10).expect("earnings").is_empty());
    // A job that produced nothing earns nothing.
    store
        .hold("job-1b", &acct.id, TokenType::Spark, a("0.1"))
        .expect("hold");
    store.settle("job-1b", a("0"), Some("w-1")).expect("settle");
    assert_eq!(store.earnings("w-1", 10).expect("earnings").len(), 1);
}

fn holds_and_settlements_are_idempotent(store: &dyn Store) {
    let acct = store
        .create_account("carol", &balances("5", "0"))
        .expect("create");
    for _ in 0..3 {
        store
            .hold("job-2", &acct.id, TokenType::Spark, a("2"))
            .expect("hold");
    }
    assert_eq!(
        store.account(&acct.id).expect("account").balances.spark,
        a("3")
    );
    assert!(matches!(
        store.hold("job-2", &acct.id, TokenType::Spark, a("1")),
        Err(StoreError::HoldMismatch { .. })
    ));
    for _ in 0..3 {
        assert_eq!(
            store
                .settle("job-2", a("0.5"), None)
                .expect("settle")
                .settled,
            Some(a("0.5"))
        );
    }
    // A replay with another figure returns the first settlement, not a second one.
    assert_eq!(
        store.settle("job-2", a("1"), None).expect("settle").settled,
        Some(a("0.5"))
    );
    assert_eq!(
        store.account(&acct.id).expect("account").balances.spark,
        a("4.5")
    );
    assert_eq!(store.ledger(&acct.id, 100).expect("ledger").len(), 4);
}

fn holds_take_the_first_covered_tender(store: &dyn Store) {
    let acct = store
        .create_account("frank", &balances("1", "5"))
        .expect("create");
    let auto =
        |spark: &str, sogni: &str| [(TokenType::Spark, a(spark)), (TokenType::Sogni, a(sogni))];
    let h = store
        .hold_first(&order("job-a1", &acct.id, &auto("1", "3"), None, None))
        .expect("hold");
    assert_eq!((h.token_type, h.amount), (TokenType::Spark, a("1")));
    // Spark is spent: the next one falls to SOGNI, and a replay returns the first hold.
    let h = store
        .hold_first(&order("job-a2", &acct.id, &auto("0.1", "3"), None, None))
        .expect("hold");
    assert_eq!((h.token_type, h.amount), (TokenType::Sogni, a("3")));
    assert_eq!(
        store
            .hold_first(&order("job-a1", &acct.id, &auto("1", "3"), None, None))
            .expect("replay")
            .token_type,
        TokenType::Spark
    );
    assert!(matches!(
        store.hold_first(&order("job-a1", &acct.id, &auto("2", "3"), None, None)),
        Err(StoreError::HoldMismatch { .. })
    ));
    // Neither covers it: refused as the last tender, and nothing changed.
    assert!(matches!(
        store.hold_first(&order("job-a3", &acct.id, &auto("0.1", "2.5"), None, None)),
        Err(StoreError::Insufficient { token: "sogni", .. })
    ));
    assert_eq!(
        store.account(&acct.id).expect("account").balances,
        balances("0", "2")
    );
    assert!(matches!(
        store.hold_first(&order("job-a4", &acct.id, &[], None, None)),
        Err(StoreError::Backend(_))
    ));
}

fn bad_money_changes_nothing(store: &dyn Store) {
    let acct = store
        .create_account("dave", &balances("1", "0"))
        .expect("create");
    let before = store.ledger(&acct.id, 100).expect("ledger");
    assert!(matches!(
        store.hold("job-3", &acct.id, TokenType::Spark, a("1.000001")),
        Err(StoreError::Insufficient { .. })
    ));
    assert!(matches!(
        store.hold("job-3", &acct.id, TokenType::Sogni, a("0.1")),
        Err(StoreError::Insufficient { .. })
    ));
    assert!(matches!(
        store.hold("job-3", &acct.id, TokenType::Spark, a("-1")),
        Err(StoreError::NegativeAmount(_))
    ));
    assert!(matches!(
        store.credit(&acct.id, TokenType::Spark, a("-1"), "x"),
        Err(StoreError::NegativeAmount(_))
    ));
    assert!(matches!(
        store.settle("job-3", a("0"), None),
        Err(StoreError::NoHold(_))
    ));
    store
        .hold("job-4", &acct.id, TokenType::Spark, a("0.5"))
        .expect("hold");
    assert!(matches!(
        store.settle("job-4", a("0.6"), None),
        Err(StoreError::OverCharge { .. })
    ));
    assert_eq!(store.hold_of("job-4").expect("hold").settled, None);
    assert_eq!(
        store.account(&acct.id).expect("account").balances,
        balances("0.5", "0")
    );
    assert_eq!(
        store.ledger(&acct.id, 100).expect("ledger").len(),
        before.len() + 1
    );
}

fn keys_are_hashed_regenerated_and_disabled(store: &dyn Store) {
    let acct = store
        .create_account("erin", &balances("0", "0"))
        .expect("create");
    let k = store.create_key(&acct.id).expect("key");
    assert!(k.api_key.starts_with("sn-") && k.api_key.len() == 51);
    let rec = store
        .authenticate(&k.api_key)
        .expect("auth")
        .expect("a valid key");
    assert_eq!(
        (rec.key_id.as_str(), rec.account_id.as_str()),
        (k.key_id.as_str(), acct.id.as_str())
    );
    assert!(store.authenticate("sn-not-a-key").expect("auth").is_none());
    let k2 = store.regenerate_key(&k.key_id).expect("regenerate");
    assert_eq!(k2.key_id, k.key_id);
    assert!(store.authenticate(&k.api_key).expect("auth").is_none());
    assert!(store.authenticate(&k2.api_key).expect("auth").is_some());
    assert!(store.disable_key(&k.key_id).expect("disable").disabled);
    assert!(store.authenticate(&k2.api_key).expect("auth").is_none());
    assert!(matches!(
        store.create_key("acct_missing"),
        Err(StoreError::NoAccount(_))
    ));
    assert!(matches!(
        store.disable_key("key_missing"),
        Err(StoreError::NoKey(_))
    ));
}

/// A hold made with a key proof places nothing once that key is disabled or its secret
/// regenerated, and the balance and ledger stay as they were.
fn holds_check_the_key_they_were_asked_with(store: &dyn Store) {
    let acct = store
        .create_account("hank", &balances("5", "0"))
        .expect("create");
    let spark = [(TokenType::Spark, a("1"))];
    let first = store.create_key(&acct.id).expect("key");
    let proof = |k: &NewKey| KeyProof {
        key_id: k.key_id.clone(),
        secret_hash: key_hash(&k.api_key),
    };
    store
        .hold_first(&order(
            "job-k1",
            &acct.id,
            &spark,
            Some(&proof(&first)),
            None,
        ))
        .expect("a live key holds");

    let second = store.regenerate_key(&first.key_id).expect("regenerate");
    let revoked = store.hold_first(&order(
        "job-k2",
        &acct.id,
        &spark,
        Some(&proof(&first)),
        None,
    ));
    assert!(
        matches!(revoked, Err(StoreError::KeyRevoked(ref id)) if *id == first.key_id),
        "{revoked:?}"
    );
    store
        .hold_first(&order(
            "job-k3",
            &acct.id,
            &spark,
            Some(&proof(&second)),
            None,
        ))
        .expect("the new secret holds");

    store.disable_key(&second.key_id).expect("disable");
    assert!(matches!(
        store.hold_first(&order(
            "job-k4",
            &acct.id,
            &spark,
            Some(&proof(&second)),
            None
        )),
        Err(StoreError::KeyRevoked(_))
    ));
    let other = KeyProof {
        key_id: "key_missing".into(),
        secret_hash: key_hash("sn-nothing"),
    };
    assert!(matches!(
        store.hold_first(&order("job-k5", &acct.id, &spark, Some(&other), None)),
        Err(StoreError::KeyRevoked(_))
    ));

    assert_eq!(
        store.account(&acct.id).expect("account").balances.spark,
        a("3"),
        "only the two valid holds spent"
    );
    assert!(matches!(
        store.hold_of("job-k2"),
        Err(StoreError::NoHold(_))
    ));
    assert_eq!(
        store
            .ledger(&acct.id, 100)
            .expect("ledger")
            .iter()
            .filter(|e| e.kind == EntryKind::Hold)
            .count(),
        2
    );
}

#[test]
fn the_embedded_store_conforms() {
    let dir = tempfile::tempdir().expect("a temp dir");
    run(&embedded::RedbStore::open(dir.path()).expect("open"));
}

#[test]
fn the_embedded_store_survives_a_restart() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (acct, key) = {
        let s = embedded::RedbStore::open(dir.path()).expect("open");
        let acct = s
            .create_account("frank", &balances("3", "1"))
            .expect("create");
        s.hold("job-9", &acct.id, TokenType::Spark, a("1"))
            .expect("hold");
        let key = s.create_key(&acct.id).expect("key");
        (acct, key)
    };
    let s = embedded::RedbStore::open(dir.path()).expect("reopen");
    assert_eq!(
        s.account(&acct.id).expect("account").balances,
        balances("2", "1")
    );
    assert_eq!(s.ledger(&acct.id, 10).expect("ledger").len(), 3);
    assert!(s.authenticate(&key.api_key).expect("auth").is_some());
    assert_eq!(
        s.settle("job-9", a("0.25"), None).expect("settle").settled,
        Some(a("0.25"))
    );
    assert_eq!(
        s.account(&acct.id).expect("account").balances.spark,
        a("2.75")
    );
}

#[test]
fn a_second_process_gets_a_clear_error() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let _held = embedded::RedbStore::open(dir.path()).expect("open");
    match embedded::RedbStore::open(dir.path()) {
        Err(e @ StoreError::InUse(_)) => assert!(e.to_string().contains("in use"), "{e}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened twice"),
    }
}

#[test]
fn the_redis_store_conforms() {
    let server = crate::test_redis::TestRedis::start();
    run(&redis::RedisStore::connect(&server.url).expect("connect"));
}

/// Two fronts (two connections) holding against one account at once never spend more than
/// it has, and every hold is in the ledger exactly once.
#[test]
fn two_redis_fronts_never_overspend_one_account() {
    let server = crate::test_redis::TestRedis::start();
    let setup = redis::RedisStore::connect(&server.url).expect("connect");
    let acct = setup
        .create_account("shared", &balances("10", "0"))
        .expect("create");
    let granted: usize = std::thread::scope(|s| {
        let fronts: Vec<_> = (0..2)
            .map(|f| {
                let (url, id) = (server.url.clone(), acct.id.clone());
                s.spawn(move || {
                    let store = redis::RedisStore::connect(&url).expect("connect");
                    (0..40)
                        .filter(|n| {
                            store
                                .hold(&format!("job-{f}-{n}"), &id, TokenType::Spark, a("0.5"))
                                .is_ok()
                        })
                        .count()
                })
            })
            .collect();
        fronts
            .into_iter()
            .map(|t| t.join().expect("front thread"))
            .sum()
    });
    assert_eq!(granted, 20, "10 spark covers exactly 20 holds of 0.5");
    assert_eq!(
        setup.account(&acct.id).expect("account").balances.spark,
        a("0")
    );
    let ledger = setup.ledger(&acct.id, 1000).expect("ledger");
    assert_eq!(
        ledger.iter().filter(|e| e.kind == EntryKind::Hold).count(),
        20
    );
    let seqs: std::collections::BTreeSet<u64> = ledger.iter().map(|e| e.seq).collect();
    assert_eq!(seqs.len(), ledger.len(), "sequence numbers are unique");
}

/// A hold that carries a bus entry writes it with itself, exactly once: not when the
/// balance does not cover the hold, not on a replay. What it writes reads back through the
/// bus as the envelope it was made from. The embedded store, which cannot reach a bus
/// stream, refuses one and holds nothing.
#[tokio::test]
async fn a_redis_hold_writes_its_outbox_entry_with_itself() {
    use crate::bus::Bus;
    let server = crate::test_redis::TestRedis::start();
    let store = redis::RedisStore::connect(&server.url).expect("connect");
    let bus = crate::bus::redis::RedisBus::connect(&server.url)
        .await
        .expect("bus");
    let acct = store
        .create_account("outbox", &balances("1", "0"))
        .expect("create");
    let entry = |job: &str| {
        Outbox::new(
            "sn:test:outbox".into(),
            100,
            "test.place",
            "front-1",
            job,
            &job.to_string(),
        )
        .expect("an entry")
    };

    store
        .hold_first(&order(
            "job-o1",
            &acct.id,
            &[(TokenType::Spark, a("0.6"))],
            None,
            Some(&entry("job-o1")),
        ))
        .expect("hold");
    store
        .hold_first(&order(
            "job-o1",
            &acct.id,
            &[(TokenType::Spark, a("0.6"))],
            None,
            Some(&entry("job-o1")),
        ))
        .expect("replay");
    assert!(matches!(
        store.hold_first(&order(
            "job-o2",
            &acct.id,
            &[(TokenType::Spark, a("0.6"))],
            None,
            Some(&entry("job-o2"))
        )),
        Err(StoreError::Insufficient { .. })
    ));

    let read = bus
        .consume(
            "sn:test:outbox",
            "readers",
            "r1",
            10,
            std::time::Duration::from_millis(1),
            crate::bus::Ack::Explicit,
        )
        .await
        .expect("read");
    let jobs: Vec<String> = read
        .iter()
        .map(|d| d.envelope.payload::<String>().expect("payload"))
        .collect();
    assert_eq!(jobs, ["job-o1"], "one entry, for the hold that was placed");
    assert_eq!(
        (
            read[0].envelope.kind.as_str(),
            read[0].envelope.correlation_id.as_str()
        ),
        ("test.place", "job-o1")
    );

    let dir = tempfile::tempdir().expect("a temp dir");
    let embedded = embedded::RedbStore::open(dir.path()).expect("open");
    let acct = embedded
        .create_account("outbox", &balances("1", "0"))
        .expect("create");
    assert!(matches!(
        embedded.hold_first(&order(
            "job-o3",
            &acct.id,
            &[(TokenType::Spark, a("0.5"))],
            None,
            Some(&entry("job-o3"))
        )),
        Err(StoreError::Backend(_))
    ));
    assert_eq!(
        embedded.account(&acct.id).expect("account").balances.spark,
        a("1")
    );
}
