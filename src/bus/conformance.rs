//! The behaviour every [`Bus`] must have, written once and run against the in-process bus
//! and a real Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Ping {
    n: u32,
    text: String,
}

fn ping(n: u32) -> Envelope {
    Envelope::new(
        "ping",
        "node-a",
        &format!("job-{n}"),
        &Ping {
            n,
            text: format!("#{n}"),
        },
    )
    .expect("encode")
}

fn numbers(d: &[Delivery]) -> Vec<u32> {
    d.iter()
        .map(|d| d.envelope.payload::<Ping>().expect("decode").n)
        .collect()
}

const NOW: Duration = Duration::ZERO;

/// Runs every check against a fresh bus.
pub async fn run(bus: Arc<dyn Bus>) {
    groups_each_see_every_message_once(&*bus).await;
    consumers_of_one_group_split_the_work(&*bus).await;
    unacked_messages_are_claimed_after_a_crash(&*bus).await;
    consume_waits_for_a_publish_and_times_out(Arc::clone(&bus)).await;
    streams_are_trimmed(&*bus).await;
    publishes_keep_the_order_they_were_made_in(&*bus).await;
    messages_published_together_are_claimed_and_acked_together(&*bus).await;
    entries_read_without_acks_are_never_pending(&*bus).await;
    blobs_are_kept_until_they_expire_or_are_dropped(&*bus).await;
}

async fn groups_each_see_every_message_once(bus: &dyn Bus) {
    for n in 0..3 {
        bus.publish("s1", ping(n), 100).await.expect("publish");
    }
    for group in ["g1", "g2"] {
        let got = bus
            .consume("s1", group, "c", 10, NOW, Ack::Explicit)
            .await
            .expect("consume");
        assert_eq!(numbers(&got), [0, 1, 2], "group {group}");
        assert_eq!(got[1].envelope.correlation_id, "job-1");
        assert!(bus
            .consume("s1", group, "c", 10, NOW, Ack::Explicit)
            .await
            .expect("consume")
            .is_empty());
    }
}

async fn consumers_of_one_group_split_the_work(bus: &dyn Bus) {
    for n in 0..4 {
        bus.publish("s2", ping(n), 100).await.expect("publish");
    }
    let a = bus
        .consume("s2", "g", "a", 2, NOW, Ack::Explicit)
        .await
        .expect("consume");
    let b = bus
        .consume("s2", "g", "b", 10, NOW, Ack::Explicit)
        .await
        .expect("consume");
    assert_eq!((numbers(&a), numbers(&b)), (vec![0, 1], vec![2, 3]));
}

async fn unacked_messages_are_claimed_after_a_crash(bus: &dyn Bus) {
    bus.publish("s3", ping(7), 100).await.expect("publish");
    bus.publish("s3", ping(8), 100).await.expect("publish");
    let got = bus
        .consume("s3", "g", "dead", 10, NOW, Ack::Explicit)
        .await
        .expect("consume");
    bus.ack("s3", "g", &[got[0].id.clone()]).await.expect("ack");
    // Not idle long enough yet.
    assert!(bus
        .claim_stale("s3", "g", "alive", Duration::from_secs(60), 10)
        .await
        .expect("claim")
        .is_empty());
    let claimed = bus
        .claim_stale("s3", "g", "alive", NOW, 10)
        .await
        .expect("claim");
    assert_eq!(numbers(&claimed), [8]);
    assert_eq!(claimed[0].id, got[1].id);
    bus.ack("s3", "g", &[claimed[0].id.clone()])
        .await
        .expect("ack");
    assert!(bus
        .claim_stale("s3", "g", "alive", NOW, 10)
        .await
        .expect("claim")
        .is_empty());
}

async fn consume_waits_for_a_publish_and_times_out(bus: Arc<dyn Bus>) {
    let t = Instant::now();
    assert!(bus
        .consume("s4", "g", "c", 10, Duration::from_millis(50), Ack::Explicit)
        .await
        .expect("consume")
        .is_empty());
    assert!(t.elapsed() >= Duration::from_millis(50));
    let publisher = Arc::clone(&bus);
    let task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        publisher
            .publish("s4", ping(42), 100)
            .await
            .expect("publish");
    });
    let t = Instant::now();
    let got = bus
        .consume("s4", "g", "c", 10, Duration::from_secs(10), Ack::Explicit)
        .await
        .expect("consume");
    assert_eq!(numbers(&got), [42]);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "woke on the publish, not the timeout"
    );
    task.await.expect("publisher");
}

async fn streams_are_trimmed(bus: &dyn Bus) {
    // Trimming is approximate (Redis trims whole nodes of about 100 entries).
    for n in 0..1000 {
        bus.publish("s5", ping(n), 100).await.expect("publish");
    }
    let got = bus
        .consume("s5", "late", "c", 10_000, NOW, Ack::Explicit)
        .await
        .expect("consume");
    assert!(
        got.len() >= 100 && got.len() < 1000,
        "about the newest 100 kept, got {}",
        got.len()
    );
    assert_eq!(numbers(&got).last(), Some(&999));
}

/// Publishes made before any is awaited (the Redis bus packs them into shared entries) are
/// appended in the order they were made, stream by stream, and each is told the id of the
/// entry it is delivered in.
async fn publishes_keep_the_order_they_were_made_in(bus: &dyn Bus) {
    let pending: Vec<_> = (0..2000)
        .map(|n| bus.publish(if n % 3 == 0 { "s6" } else { "s7" }, ping(n), 100_000))
        .collect();
    let ids = futures_util::future::join_all(pending)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .expect("publish");
    let (s6, s7) = (
        bus.consume("s6", "g", "c", 10_000, NOW, Ack::Explicit)
            .await
            .expect("consume"),
        bus.consume("s7", "g", "c", 10_000, NOW, Ack::Explicit)
            .await
            .expect("consume"),
    );
    assert_eq!(
        numbers(&s6),
        (0..2000).filter(|n| n % 3 == 0).collect::<Vec<_>>()
    );
    assert_eq!(
        numbers(&s7),
        (0..2000).filter(|n| n % 3 != 0).collect::<Vec<_>>()
    );
    let published: Vec<_> = ids
        .iter()
        .enumerate()
        .filter(|(n, _)| n % 3 == 0)
        .map(|(_, id)| id.as_str())
        .collect();
    assert_eq!(
        published,
        s6.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        "the ids publish gave are those delivered"
    );
    let late = post(
        bus,
        "s6",
        100_000,
        "ping",
        "node-a",
        "job-x",
        &Ping {
            n: 5000,
            text: String::new(),
        },
    );
    bus.publish("s6", ping(5001), 100_000)
        .await
        .expect("publish");
    late.await.expect("post");
    assert_eq!(
        numbers(
            &bus.consume("s6", "g", "c", 10, NOW, Ack::Explicit)
                .await
                .expect("consume")
        ),
        [5000, 5001]
    );
}

/// Messages that share an entry are handed over together when their consumer dies, and
/// acking the ids delivered acks them all.
async fn messages_published_together_are_claimed_and_acked_together(bus: &dyn Bus) {
    let pending: Vec<_> = (0..3).map(|n| bus.publish("s8", ping(n), 100)).collect();
    futures_util::future::join_all(pending)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .expect("publish");
    assert_eq!(
        numbers(
            &bus.consume("s8", "g", "dead", 10, NOW, Ack::Explicit)
                .await
                .expect("consume")
        ),
        [0, 1, 2]
    );
    let claimed = bus
        .claim_stale("s8", "g", "alive", NOW, 10)
        .await
        .expect("claim");
    assert_eq!(numbers(&claimed), [0, 1, 2]);
    let mut ids: Vec<String> = claimed.into_iter().map(|d| d.id).collect();
    ids.dedup();
    bus.ack("s8", "g", &ids).await.expect("ack");
    assert!(bus
        .claim_stale("s8", "g", "alive", NOW, 10)
        .await
        .expect("claim")
        .is_empty());
}

/// An entry read with [`Ack::OnRead`] is handled: never handed to another consumer.
async fn entries_read_without_acks_are_never_pending(bus: &dyn Bus) {
    bus.publish("s9", ping(1), 100).await.expect("publish");
    bus.publish("s9", ping(2), 100).await.expect("publish");
    assert_eq!(
        numbers(
            &bus.consume("s9", "g", "dead", 10, NOW, Ack::OnRead)
                .await
                .expect("consume")
        ),
        [1, 2]
    );
    assert!(bus
        .claim_stale("s9", "g", "alive", NOW, 10)
        .await
        .expect("claim")
        .is_empty());
    assert!(bus
        .consume("s9", "g", "alive", 10, NOW, Ack::Explicit)
        .await
        .expect("consume")
        .is_empty());
    bus.publish("s9", ping(3), 100).await.expect("publish");
    assert_eq!(
        numbers(
            &bus.consume("s9", "g", "alive", 10, NOW, Ack::OnRead)
                .await
                .expect("consume")
        ),
        [3]
    );
}

/// A blob reads back whole until its time runs out; keeping it extends that time, and a
/// dropped or expired blob is gone for good.
async fn blobs_are_kept_until_they_expire_or_are_dropped(bus: &dyn Bus) {
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let long = Duration::from_secs(60);
    assert_eq!(bus.get_blob("b1").await.expect("get"), None);
    assert!(!bus.keep_blob("b1", long).await.expect("keep"));
    bus.put_blob("b1", &bytes, long).await.expect("put");
    assert_eq!(bus.get_blob("b1").await.expect("get"), Some(bytes.clone()));
    bus.drop_blob("b1").await.expect("drop");
    assert_eq!(bus.get_blob("b1").await.expect("get"), None);
    bus.drop_blob("b1").await.expect("dropping nothing");

    let short = Duration::from_millis(300);
    bus.put_blob("b2", b"kept", short).await.expect("put");
    bus.put_blob("b3", b"left", short).await.expect("put");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(bus.keep_blob("b2", long).await.expect("keep"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        bus.get_blob("b2").await.expect("get"),
        Some(b"kept".to_vec())
    );
    assert_eq!(bus.get_blob("b3").await.expect("get"), None, "expired");
    assert!(!bus.keep_blob("b3", long).await.expect("keep"));
}

#[test]
fn entries_unpack_into_their_envelopes() {
    let (a, b) = (ping(1), ping(2));
    let mut entry = [a.to_bytes().expect("encode"), b.to_bytes().expect("encode")].concat();
    let (read, error) = Envelope::unpack(&entry);
    assert!(read == [a.clone(), b.clone()] && error.is_none());
    entry.extend_from_slice(&[1, 2, 3]);
    let (read, error) = Envelope::unpack(&entry);
    assert_eq!(read, [a, b], "what precedes an unreadable envelope is kept");
    assert!(matches!(error, Some(BusError::Decode(_))));
}

#[test]
fn envelopes_round_trip_and_reject_other_versions() {
    let e = ping(5);
    let back = Envelope::from_bytes(&e.to_bytes().expect("encode")).expect("decode");
    assert_eq!(back, e);
    assert_eq!(
        back.payload::<Ping>().expect("payload"),
        Ping {
            n: 5,
            text: "#5".into()
        }
    );
    let future = Envelope {
        version: PROTOCOL_VERSION + 1,
        ..e
    };
    assert!(matches!(
        Envelope::from_bytes(&future.to_bytes().expect("encode")),
        Err(BusError::Version { .. })
    ));
    assert!(matches!(
        future.payload::<Ping>(),
        Err(BusError::Version { .. })
    ));
    assert!(matches!(
        Envelope::from_bytes(&[1, 2, 3]),
        Err(BusError::Decode(_))
    ));
}

#[tokio::test]
async fn the_memory_bus_conforms() {
    run(Arc::new(memory::MemoryBus::new())).await;
}

#[tokio::test]
async fn the_redis_bus_conforms() {
    let server = crate::test_redis::TestRedis::start();
    run(Arc::new(
        super::redis::RedisBus::connect(&server.url)
            .await
            .expect("connect"),
    ))
    .await;
}
