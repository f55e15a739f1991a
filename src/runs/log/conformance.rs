//! The behaviour every [`RunLog`] must have, written once and run against both.

use std::time::{Duration, Instant};

use super::*;

fn meta(run: &str, idem: Option<&str>) -> RunMeta {
    RunMeta {
        run_id: run.into(),
        account_id: "acct".into(),
        key_id: "key".into(),
        secret_hash: "hash".into(),
        idempotency_key: idem.map(String::from),
        created_ms: 1,
        origin: "http://h".into(),
        kind: KIND_CHAT.into(),
    }
}

fn event(seq: u64, kind: &str) -> RunEvent {
    let mut e = RunEvent::new(kind, serde_json::json!({"n": seq}));
    e.sequence = seq;
    e
}

fn kinds(events: &[RunEvent]) -> Vec<(u64, String)> {
    events
        .iter()
        .map(|e| (e.sequence, e.kind.clone()))
        .collect()
}

pub fn run(log: &dyn RunLog) {
    create_is_idempotent_per_account_key(log);
    appends_are_fenced_by_sequence_and_lease(log);
    leases_expire_and_orphans_are_found(log);
    followers_wake_on_appends(log);
    cancel_retention_and_delete(log);
    kinds_are_listed_apart_and_reopen(log);
}

fn create_is_idempotent_per_account_key(log: &dyn RunLog) {
    assert_eq!(
        log.create(&meta("r1", Some("k")), &event(0, "run_created"))
            .unwrap(),
        Created::New
    );
    assert_eq!(
        log.create(&meta("r2", Some("k")), &event(0, "run_created"))
            .unwrap(),
        Created::Existing("r1".into())
    );
    assert!(log.meta("r2").unwrap().is_none());
    let mut other = meta("r3", Some("k"));
    other.account_id = "other".into();
    assert_eq!(
        log.create(&other, &event(0, "run_created")).unwrap(),
        Created::New
    );
    assert_eq!(log.meta("r1").unwrap(), Some(meta("r1", Some("k"))));
    assert_eq!(
        kinds(&log.read("r1", None).unwrap()),
        vec![(0, "run_created".into())]
    );
}

fn appends_are_fenced_by_sequence_and_lease(log: &dyn RunLog) {
    // Without the lease nothing is written.
    assert!(matches!(
        log.append("r1", "a", &[event(1, "x")]),
        Err(LogError::Fenced(_))
    ));
    let lease = log.claim("r1", "a", 1000, 2000).unwrap().expect("free");
    assert_eq!(lease.owner_id, "a");
    assert!(
        log.claim("r1", "b", 1500, 2500).unwrap().is_none(),
        "held by a"
    );
    log.append("r1", "a", &[event(1, "x"), event(2, "y")])
        .unwrap();
    // A stale writer (wrong next sequence) is refused.
    assert!(matches!(
        log.append("r1", "a", &[event(2, "z")]),
        Err(LogError::Fenced(_))
    ));
    assert_eq!(
        kinds(&log.read("r1", Some(0)).unwrap()),
        vec![(1, "x".into()), (2, "y".into())]
    );
    assert_eq!(kinds(&log.read("r1", Some(2)).unwrap()), vec![]);
    // Renewing keeps the lease id; another owner takes it once it expired.
    let renewed = log.claim("r1", "a", 1800, 2800).unwrap().expect("own");
    assert_eq!(
        (renewed.lease_id, renewed.expires_at),
        (lease.lease_id, 2800)
    );
    let taken = log.claim("r1", "b", 2900, 3900).unwrap().expect("expired");
    assert_eq!(taken.owner_id, "b");
    assert!(matches!(
        log.append("r1", "a", &[event(3, "late")]),
        Err(LogError::Fenced(_))
    ));
    log.append("r1", "b", &[event(3, "run_resumed")]).unwrap();
    assert_eq!(
        log.lease("r1").unwrap().map(|l| l.owner_id),
        Some("b".into())
    );
}

fn leases_expire_and_orphans_are_found(log: &dyn RunLog) {
    // r3 was never claimed; r1's lease (b's) ends at 3900.
    let mut o = log.orphans(3000, 10).unwrap();
    o.sort();
    assert_eq!(o, vec!["r3".to_string()]);
    let mut o = log.orphans(4000, 10).unwrap();
    o.sort();
    assert_eq!(o, vec!["r1".to_string(), "r3".to_string()]);
    // Parked (waiting for the user) it needs no executor, until activated.
    log.park("r1", "b").unwrap();
    assert!(log.lease("r1").unwrap().is_none());
    assert_eq!(log.orphans(4000, 10).unwrap(), vec!["r3".to_string()]);
    log.activate("r1").unwrap();
    let mut o = log.orphans(4000, 10).unwrap();
    o.sort();
    assert_eq!(o, vec!["r1".to_string(), "r3".to_string()]);
}

fn followers_wake_on_appends(log: &dyn RunLog) {
    let cursors = vec![("r1".to_string(), Some(3)), ("r3".to_string(), Some(0))];
    let started = Instant::now();
    assert!(log
        .wait(&cursors, Duration::from_millis(200))
        .unwrap()
        .is_empty());
    assert!(started.elapsed() >= Duration::from_millis(150), "waited");
    log.claim("r3", "c", 5000, 9_999_999_999_999)
        .unwrap()
        .expect("free");
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            log.append("r3", "c", &[event(1, "late")]).unwrap();
        });
        let started = Instant::now();
        let got = log.wait(&cursors, Duration::from_secs(5)).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "woken by the append"
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "r3");
        assert_eq!(kinds(&got[0].1), vec![(1, "late".into())]);
    });
    // A cursor of None reads from the start.
    let got = log
        .wait(&[("r3".into(), None)], Duration::from_millis(10))
        .unwrap();
    assert_eq!(got[0].1.len(), 2);
}

fn cancel_retention_and_delete(log: &dyn RunLog) {
    assert_eq!(log.cancel_requested("r3").unwrap(), None);
    log.request_cancel("r3", "user").unwrap();
    assert_eq!(log.cancel_requested("r3").unwrap(), Some("user".into()));
    log.finished("r1", 100).unwrap();
    log.finished("r3", 200).unwrap();
    assert_eq!(log.ended_before(150, 10).unwrap(), vec!["r1".to_string()]);
    log.delete("r1").unwrap();
    assert!(log.meta("r1").unwrap().is_none());
    assert!(log.read("r1", None).unwrap().is_empty());
    assert!(log.ended_before(150, 10).unwrap().is_empty());
    // Its idempotency key is free again.
    assert_eq!(
        log.create(&meta("r4", Some("k")), &event(0, "run_created"))
            .unwrap(),
        Created::New
    );
}

fn kinds_are_listed_apart_and_reopen(log: &dyn RunLog) {
    let workflow = |run: &str, created_ms: u64, idem: Option<&str>| RunMeta {
        kind: KIND_WORKFLOW.into(),
        created_ms,
        ..meta(run, idem)
    };
    // A workflow's idempotency key is not a chat run's (r4 holds "k" for chat).
    assert_eq!(
        log.create(
            &workflow("w1", 10, Some("k")),
            &event(0, "workflow_started")
        )
        .unwrap(),
        Created::New
    );
    assert_eq!(
        log.create(
            &workflow("w2", 30, Some("k")),
            &event(0, "workflow_started")
        )
        .unwrap(),
        Created::Existing("w1".into())
    );
    for (run, at) in [("w2", 30), ("w3", 20)] {
        log.create(&workflow(run, at, None), &event(0, "workflow_started"))
            .unwrap();
    }
    let list = |offset, limit| log.list("acct", KIND_WORKFLOW, offset, limit).unwrap();
    assert_eq!(list(0, 10), ["w2", "w3", "w1"]);
    assert_eq!(list(1, 1), ["w3"]);
    assert!(list(3, 10).is_empty());
    assert!(log.list("other", KIND_WORKFLOW, 0, 10).unwrap().is_empty());
    assert!(log
        .list("acct", KIND_CHAT, 0, 10)
        .unwrap()
        .contains(&"r4".to_string()));
    // An ended, cancelled workflow reopened needs an executor and is due for nothing.
    log.claim("w1", "o", 1, 2).unwrap();
    log.request_cancel("w1", "user").unwrap();
    log.retire("w1", "o", 5).unwrap();
    assert!(!log.orphans(1_000, 100).unwrap().contains(&"w1".to_string()));
    log.reopen("w1").unwrap();
    assert_eq!(log.cancel_requested("w1").unwrap(), None);
    assert!(!log
        .ended_before(1_000, 100)
        .unwrap()
        .contains(&"w1".to_string()));
    assert!(log.orphans(1_000, 100).unwrap().contains(&"w1".to_string()));
    log.delete("w1").unwrap();
    assert_eq!(list(0, 10), ["w2", "w3"]);
}

#[test]
fn the_embedded_run_log_conforms() {
    let dir = tempfile::tempdir().expect("a temp dir");
    run(&embedded::RedbRunLog::open(dir.path()).expect("open"));
}

#[test]
fn the_redis_run_log_conforms() {
    let server = crate::test_redis::TestRedis::start();
    run(&redis::RedisRunLog::connect(&server.url).expect("connect"));
}
