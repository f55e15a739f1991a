//! The cluster's [`Bus`]: Redis streams, so nodes on different machines exchange the same
//! envelopes that `supernet serve` passes in memory.
//!
//! # Streams and keys
//!
//! Every name starts with `sn:v5:`; the `v5` is [`super::PROTOCOL_VERSION`], so nodes of two
//! protocol versions never read each other's messages. Each entry has one field, `m`,
//! holding one or more bincode [`Envelope`]s back to back: a writer packs what it publishes
//! to a stream together into one entry ([`super::coalesce`]).
//!
//! | stream | written by | read by (group) | carries |
//! |---|---|---|---|
//! | `sn:v5:worker:{id}` | coordinator, sessions | that worker (`workers`) | jobs to run, cancellations |
//! | `sn:v5:node:{id}.{n}` | workers, coordinator | that front's thread `n` (`sessions`, `NOACK`) | job events, placement answers, lost jobs |
//! | `sn:v5:coordinator` | sessions | the leader coordinator (`coordinator`) | placement requests |
//! | `sn:v5:heartbeats` | workers | every coordinator (`coord-{node}`) | registration, load, leaving |
//!
//! Entries are appended with `XADD ... MAXLEN ~ N`, read with `XREADGROUP ... BLOCK`, and
//! acknowledged with `XACK` once handled (or as read, `NOACK`, for [`Ack::OnRead`]). A
//! consumer that dies leaves its entries pending; `XAUTOCLAIM` hands them to a live consumer
//! after they have been idle long enough. Groups are created on first read at the start of
//! the stream (`XGROUP CREATE ... 0 MKSTREAM`), so nothing published before a group's first
//! reader is missed, as in the memory bus.
//!
//! The keys beside the streams (leader lease, pool view, model cards) are described in
//! [`crate::cluster::state`]. Blobs are plain keys written with `SET ... PX`, kept with
//! `PEXPIRE` and dropped with `DEL`.
//!
//! Writes share one auto-reconnecting connection, and publishes to a stream are packed into
//! entries ([`super::coalesce`]); each blocking read borrows a connection of its
//! own, since a blocked connection can carry nothing else, and one made on its own thread.

use std::sync::Mutex;
use std::thread::{self, ThreadId};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, RedisError, Value};

use super::coalesce::{Coalescer, FIELD};
use super::{Ack, Bus, BusError, BusFuture, Delivery, Envelope};

/// How long any one command may take (blocking reads add their block time).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

fn transport(e: RedisError) -> BusError {
    BusError::Transport(e.to_string())
}

/// Connects to Redis with timeouts fit for a cluster that must notice a dead server.
pub async fn connection_manager(client: &Client) -> Result<ConnectionManager, RedisError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(RESPONSE_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT)
        .set_number_of_retries(2)
        .set_max_delay(1000);
    client.get_connection_manager_with_config(config).await
}

pub struct RedisBus {
    client: Client,
    writer: ConnectionManager,
    publisher: Coalescer,
    /// Idle connections for blocking reads, with the thread each was made on.
    readers: Mutex<Vec<(ThreadId, MultiplexedConnection)>>,
}

impl RedisBus {
    /// Connects to `url` (`redis://host:port/db`); fails if Redis cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, BusError> {
        let client = Client::open(url).map_err(transport)?;
        let writer = connection_manager(&client).await.map_err(transport)?;
        Ok(Self {
            client,
            publisher: Coalescer::new(writer.clone()),
            writer,
            readers: Mutex::new(Vec::new()),
        })
    }

    /// A connection for a blocking read, made on this thread: a connection's replies are
    /// read and parsed by a task on the thread that made it, so one made on another thread
    /// would have a reply wait for that thread too.
    async fn reader(&self) -> Result<(ThreadId, MultiplexedConnection), BusError> {
        let here = thread::current().id();
        let idle = {
            let mut idle = crate::locks::lock(&self.readers);
            idle.iter()
                .rposition(|(made_on, _)| *made_on == here)
                .map(|i| idle.swap_remove(i))
        };
        match idle {
            Some(lent) => Ok(lent),
            None => {
                // Reads block for at most a few seconds; the timeout only catches a dead server.
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(RESPONSE_TIMEOUT)
                    .set_response_timeout(Duration::from_secs(60));
                self.client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(|c| (here, c))
                    .map_err(transport)
            }
        }
    }

    fn give_back(&self, lent: (ThreadId, MultiplexedConnection)) {
        crate::locks::lock(&self.readers).push(lent);
    }

    /// Creates `group` on `stream` at its start if it does not exist yet.
    async fn ensure_group(&self, stream: &str, group: &str) -> Result<(), BusError> {
        let mut c = self.writer.clone();
        let r: Result<(), RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await;
        match r {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(transport(e)),
            _ => Ok(()),
        }
    }
}

fn deliveries(ids: Vec<StreamId>) -> Vec<Delivery> {
    let mut out = Vec::with_capacity(ids.len());
    for mut entry in ids {
        let Some(Value::BulkString(bytes)) = entry.map.remove(FIELD) else {
            tracing::warn!(id = %entry.id, "skipping a stream entry without an envelope");
            continue;
        };
        let (envelopes, error) = Envelope::unpack(&bytes);
        if let Some(e) = error {
            tracing::warn!(id = %entry.id, read = envelopes.len(), "skipping the unreadable rest of a stream entry: {e}");
        }
        let appended = appended(&entry.id);
        out.extend(envelopes.into_iter().map(|envelope| Delivery {
            id: entry.id.clone(),
            envelope,
            appended,
        }));
    }
    out
}

/// The middle of the millisecond an entry id (`{unix ms}-{seq}`) says Redis appended it in.
fn appended(id: &str) -> Option<SystemTime> {
    let ms: u64 = id.split_once('-')?.0.parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_micros(
        ms.checked_mul(1000)?.checked_add(500)?,
    ))
}

/// A time to live in Redis's milliseconds (at least one: `PX 0` is an error).
fn millis(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

fn is_nogroup(e: &RedisError) -> bool {
    e.code() == Some("NOGROUP")
}

impl Bus for RedisBus {
    fn publish<'a>(
        &'a self,
        stream: &'a str,
        envelope: Envelope,
        max_len: usize,
    ) -> BusFuture<'a, String> {
        let queued = envelope
            .to_bytes()
            .map(|bytes| self.publisher.publish(stream, bytes, max_len));
        Box::pin(async move { queued?.await })
    }

    fn consume<'a>(
        &'a self,
        stream: &'a str,
        group: &'a str,
        consumer: &'a str,
        max: usize,
        block: Duration,
        ack: Ack,
    ) -> BusFuture<'a, Vec<Delivery>> {
        Box::pin(async move {
            let mut tried_creating = false;
            loop {
                let (made_on, mut c) = self.reader().await?;
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP")
                    .arg(group)
                    .arg(consumer)
                    .arg("COUNT")
                    .arg(max.max(1));
                // BLOCK 0 would wait forever; no BLOCK returns at once.
                if block >= Duration::from_millis(1) {
                    cmd.arg("BLOCK").arg(block.as_millis() as u64);
                }
                if ack == Ack::OnRead {
                    cmd.arg("NOACK");
                }
                cmd.arg("STREAMS").arg(stream).arg(">");
                let r: Result<Option<StreamReadReply>, RedisError> = cmd.query_async(&mut c).await;
                match r {
                    Ok(reply) => {
                        self.give_back((made_on, c));
                        return Ok(reply
                            .map(|r| r.keys.into_iter().flat_map(|k| deliveries(k.ids)).collect())
                            .unwrap_or_default());
                    }
                    Err(e) if is_nogroup(&e) && !tried_creating => {
                        self.give_back((made_on, c));
                        tried_creating = true;
                        self.ensure_group(stream, group).await?;
                    }
                    // A failed connection is dropped, not reused.
                    Err(e) => return Err(transport(e)),
                }
            }
        })
    }

    fn ack<'a>(&'a self, stream: &'a str, group: &'a str, ids: &'a [String]) -> BusFuture<'a, ()> {
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(());
            }
            let mut c = self.writer.clone();
            redis::cmd("XACK")
                .arg(stream)
                .arg(group)
                .arg(ids)
                .query_async::<i64>(&mut c)
                .await
                .map(drop)
                .map_err(transport)
        })
    }

    fn claim_stale<'a>(
        &'a self,
        stream: &'a str,
        group: &'a str,
        consumer: &'a str,
        min_idle: Duration,
        max: usize,
    ) -> BusFuture<'a, Vec<Delivery>> {
        Box::pin(async move {
            let mut c = self.writer.clone();
            let r: Result<StreamAutoClaimReply, RedisError> = redis::cmd("XAUTOCLAIM")
                .arg(stream)
                .arg(group)
                .arg(consumer)
                .arg(min_idle.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(max.max(1))
                .query_async(&mut c)
                .await;
            match r {
                Ok(reply) => Ok(deliveries(reply.claimed)),
                // No such stream or group: nothing was ever delivered, so nothing is pending.
                Err(e) if is_nogroup(&e) => Ok(Vec::new()),
                Err(e) => Err(transport(e)),
            }
        })
    }

    fn put_blob<'a>(&'a self, key: &'a str, bytes: &'a [u8], ttl: Duration) -> BusFuture<'a, ()> {
        Box::pin(async move {
            let mut c = self.writer.clone();
            redis::cmd("SET")
                .arg(key)
                .arg(bytes)
                .arg("PX")
                .arg(millis(ttl))
                .query_async::<()>(&mut c)
                .await
                .map_err(transport)
        })
    }

    fn get_blob<'a>(&'a self, key: &'a str) -> BusFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let mut c = self.writer.clone();
            redis::cmd("GET")
                .arg(key)
                .query_async(&mut c)
                .await
                .map_err(transport)
        })
    }

    fn keep_blob<'a>(&'a self, key: &'a str, ttl: Duration) -> BusFuture<'a, bool> {
        Box::pin(async move {
            let mut c = self.writer.clone();
            redis::cmd("PEXPIRE")
                .arg(key)
                .arg(millis(ttl))
                .query_async::<i64>(&mut c)
                .await
                .map(|n| n == 1)
                .map_err(transport)
        })
    }

    fn drop_blob<'a>(&'a self, key: &'a str) -> BusFuture<'a, ()> {
        Box::pin(async move {
            let mut c = self.writer.clone();
            redis::cmd("DEL")
                .arg(key)
                .query_async::<i64>(&mut c)
                .await
                .map(drop)
                .map_err(transport)
        })
    }
}
