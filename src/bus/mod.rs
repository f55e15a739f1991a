//! The message bus between actors: named streams of [`Envelope`]s, read by consumer groups
//! with explicit acknowledgement, as Redis streams work (XADD, XREADGROUP, XACK,
//! XAUTOCLAIM). A message delivered to a consumer stays pending until acked; if that
//! consumer dies, another one claims it after it has been idle long enough, so no message
//! is lost when a node is. The in-process implementation ([`memory::MemoryBus`]) serves
//! `supernet serve`; the Redis one ([`redis::RedisBus`]) serves the cluster, and both pass
//! the same checks ([`conformance`]).
//!
//! Beside the streams the bus keeps blobs: bytes under a key, for a while, that a message
//! names instead of carrying. A job's images are one: written once when the job starts, read
//! by each worker an attempt of it goes to, so a failover sends a key, not the images again.
//!
//! Only this module knows the wire codec (bincode); [`crate::protocol`] names the streams
//! and owns the messages.

mod coalesce;
#[cfg(test)]
mod conformance;
pub mod keys;
pub mod memory;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The protocol this build speaks (see [`crate::protocol`], which owns what the envelopes
/// carry); envelopes of other versions are rejected, never guessed at. Version 2: a Redis
/// stream entry holds one or more envelopes back to back ([`Envelope::unpack`]). Version 3:
/// the messages are the protocol module's own types.
pub const PROTOCOL_VERSION: u16 = 5;

/// One message: routing and tracing data around an encoded payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u16,
    /// What the payload is (`job`, `token`, `heartbeat`, ...).
    pub kind: String,
    /// The node that sent it.
    pub sender: String,
    /// Ties replies to their request (the job id).
    pub correlation_id: String,
    /// W3C `traceparent` of the sender's span.
    pub traceparent: Option<String>,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot encode a `{kind}` message: {reason}")]
    Encode { kind: String, reason: String },
    #[error("cannot decode a message: {0}")]
    Decode(String),
    #[error("protocol version {got} is not supported (this node speaks {PROTOCOL_VERSION})")]
    Version { got: u16 },
    #[error("bus: {0}")]
    Transport(String),
}

fn codec() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// A value in the bus's encoding, for a key beside the streams ([`keys`]).
pub fn encode<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>, BusError> {
    bincode::serde::encode_to_vec(v, codec()).map_err(|e| BusError::Encode {
        kind: what.into(),
        reason: e.to_string(),
    })
}

/// A value [`encode`] wrote.
pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, BusError> {
    bincode::serde::decode_from_slice(b, codec())
        .map(|(v, _)| v)
        .map_err(|e| BusError::Decode(e.to_string()))
}

impl Envelope {
    /// Wraps a payload, with the trace context of the span the caller is in (so a sender
    /// traces a message by sending it inside its span, e.g. with `Instrument`).
    pub fn new<T: Serialize>(
        kind: &str,
        sender: &str,
        correlation_id: &str,
        payload: &T,
    ) -> Result<Self, BusError> {
        let payload = encode(kind, payload)?;
        Ok(Self {
            version: PROTOCOL_VERSION,
            kind: kind.into(),
            sender: sender.into(),
            correlation_id: correlation_id.into(),
            traceparent: crate::telemetry::trace_context::current(),
            payload,
        })
    }

    /// The payload, if this build speaks the envelope's version.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, BusError> {
        if self.version != PROTOCOL_VERSION {
            return Err(BusError::Version { got: self.version });
        }
        decode(&self.payload)
    }

    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Result<Vec<u8>, BusError> {
        bincode::serde::encode_to_vec(self, codec()).map_err(|e| BusError::Encode {
            kind: self.kind.clone(),
            reason: e.to_string(),
        })
    }

    /// Reads wire bytes, rejecting other protocol versions.
    pub fn from_bytes(b: &[u8]) -> Result<Self, BusError> {
        Self::read(b).map(|(env, _)| env)
    }

    /// The envelope at the start of `b`, and how many bytes it took.
    fn read(b: &[u8]) -> Result<(Self, usize), BusError> {
        let (env, used): (Envelope, usize) = bincode::serde::decode_from_slice(b, codec())
            .map_err(|e| BusError::Decode(e.to_string()))?;
        if env.version != PROTOCOL_VERSION {
            return Err(BusError::Version { got: env.version });
        }
        Ok((env, used))
    }

    /// The envelopes of one stream entry, written back to back (the Redis bus packs what is
    /// published to a stream together into one entry). An unreadable one ends the entry,
    /// since where the next begins is then unknown: the error comes with those before it.
    pub fn unpack(mut b: &[u8]) -> (Vec<Self>, Option<BusError>) {
        let mut all = Vec::new();
        while !b.is_empty() {
            match Self::read(b) {
                Ok((env, used)) => {
                    all.push(env);
                    b = &b[used.min(b.len())..];
                }
                Err(e) => return (all, Some(e)),
            }
        }
        (all, None)
    }
}

/// An entry for a stream, to be appended by a store change in the same transaction (a
/// transactional outbox): the entry exists if and only if the change applied. A session's
/// hold carries its placement request this way, so a job is never placed without its hold,
/// and the request is in the coordinator's stream without a round trip of its own. Only a
/// store kept in the bus's own Redis can take one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbox {
    pub stream: String,
    /// Entries the stream keeps, about.
    pub max_len: usize,
    /// The entry's one field and its value, as [`Bus::publish`] would write them.
    pub field: &'static str,
    pub bytes: Vec<u8>,
}

impl Outbox {
    /// `payload` wrapped in an envelope as [`send`] would send it to `stream`.
    pub fn new<T: Serialize>(
        stream: String,
        max_len: usize,
        kind: &str,
        sender: &str,
        correlation_id: &str,
        payload: &T,
    ) -> Result<Self, BusError> {
        let bytes = Envelope::new(kind, sender, correlation_id, payload)?.to_bytes()?;
        Ok(Self {
            stream,
            max_len,
            field: coalesce::FIELD,
            bytes,
        })
    }
}

/// A message handed to a consumer; ack it by `id` once handled. Messages published together
/// may share an entry, and so an id: acking it acks them all, and a claim hands them over
/// together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub envelope: Envelope,
    /// When its entry was appended, by the clock of the bus, where the bus keeps one (a
    /// Redis entry id holds Redis's millisecond: this is its middle).
    pub appended: Option<std::time::SystemTime>,
}

/// How a consumer's reads are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Each entry stays pending for its consumer until acked, and another consumer claims it
    /// if that one dies.
    Explicit,
    /// Reading an entry handles it (Redis's `NOACK`): for a stream no other consumer could
    /// stand in for, as a front's inbox, whose sessions die with it. Saves the bus tracking
    /// pending entries and the reader its acknowledgements.
    OnRead,
}

pub type BusFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BusError>> + Send + 'a>>;

pub trait Bus: Send + Sync {
    /// Appends to `stream` (created on first use), keeping about `max_len` newest entries.
    /// The entry takes its place in the stream when this is called, so the entries of
    /// several publishes keep their order even when the futures are awaited together; the
    /// future gives the entry id once it is written.
    fn publish<'a>(
        &'a self,
        stream: &'a str,
        envelope: Envelope,
        max_len: usize,
    ) -> BusFuture<'a, String>;

    /// The messages of up to `max` entries of `stream` not yet delivered to `group`, waiting
    /// up to `block` for the first. With [`Ack::Explicit`] each entry stays pending for
    /// `consumer` until acked.
    fn consume<'a>(
        &'a self,
        stream: &'a str,
        group: &'a str,
        consumer: &'a str,
        max: usize,
        block: Duration,
        ack: Ack,
    ) -> BusFuture<'a, Vec<Delivery>>;

    /// Marks entries handled.
    fn ack<'a>(&'a self, stream: &'a str, group: &'a str, ids: &'a [String]) -> BusFuture<'a, ()>;

    /// Takes over up to `max` entries pending in `group` for at least `min_idle` (their
    /// consumer is presumed dead) and delivers them to `consumer`.
    fn claim_stale<'a>(
        &'a self,
        stream: &'a str,
        group: &'a str,
        consumer: &'a str,
        min_idle: Duration,
        max: usize,
    ) -> BusFuture<'a, Vec<Delivery>>;

    /// Keeps `bytes` under `key` for `ttl` (replacing what was there).
    fn put_blob<'a>(&'a self, key: &'a str, bytes: &'a [u8], ttl: Duration) -> BusFuture<'a, ()>;

    /// The blob under `key`, unless it expired or was dropped.
    fn get_blob<'a>(&'a self, key: &'a str) -> BusFuture<'a, Option<Vec<u8>>>;

    /// Keeps the blob under `key` for `ttl` from now; false if it is gone.
    fn keep_blob<'a>(&'a self, key: &'a str, ttl: Duration) -> BusFuture<'a, bool>;

    /// Drops the blob under `key` (nothing if there is none).
    fn drop_blob<'a>(&'a self, key: &'a str) -> BusFuture<'a, ()>;
}

/// Wraps `payload` in an envelope and appends it to `stream` (keeping about `max_len`
/// entries).
pub async fn send<T: Serialize>(
    bus: &dyn Bus,
    stream: &str,
    max_len: usize,
    kind: &str,
    sender: &str,
    correlation_id: &str,
    payload: &T,
) -> Result<(), BusError> {
    post(bus, stream, max_len, kind, sender, correlation_id, payload).await
}

/// [`send`], with the entry's place in the stream taken now: what is posted later to the
/// same stream comes after it, however the futures are awaited.
pub fn post<'a, T: Serialize>(
    bus: &'a dyn Bus,
    stream: &'a str,
    max_len: usize,
    kind: &str,
    sender: &str,
    correlation_id: &str,
    payload: &T,
) -> BusFuture<'a, ()> {
    match Envelope::new(kind, sender, correlation_id, payload) {
        Ok(env) => {
            let appended = bus.publish(stream, env, max_len);
            Box::pin(async move { appended.await.map(drop) })
        }
        Err(e) => Box::pin(std::future::ready(Err(e))),
    }
}

/// Reads `stream` as `consumer` of `group`, handing each delivery to `handle` and acking it
/// as `ack` says, until `handle` breaks (its owner is gone; with [`Ack::Explicit`] what it
/// did not take stays pending for another consumer). Transport errors are logged and
/// retried a second later.
pub async fn read_stream(
    bus: std::sync::Arc<dyn Bus>,
    stream: String,
    group: String,
    consumer: String,
    ack: Ack,
    mut handle: impl FnMut(Delivery) -> std::ops::ControlFlow<()>,
) {
    loop {
        let batch = match bus
            .consume(
                &stream,
                &group,
                &consumer,
                256,
                Duration::from_millis(500),
                ack,
            )
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(%stream, "reading: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if ack == Ack::OnRead {
            if batch.into_iter().any(|d| handle(d).is_break()) {
                return;
            }
            continue;
        }
        let mut handled: Vec<String> = Vec::with_capacity(batch.len());
        for d in batch {
            // Messages of one entry come together and share its id.
            if handled.last() != Some(&d.id) {
                handled.push(d.id.clone());
            }
            if handle(d).is_break() {
                // The entry being handled (the last id) stays pending, to be handed over whole.
                handled.pop();
                return acknowledge(bus.as_ref(), &stream, &group, &handled).await;
            }
        }
        // The next read need not wait for this acknowledgement.
        let (bus, stream, group) = (std::sync::Arc::clone(&bus), stream.clone(), group.clone());
        tokio::spawn(async move { acknowledge(bus.as_ref(), &stream, &group, &handled).await });
    }
}

async fn acknowledge(bus: &dyn Bus, stream: &str, group: &str, ids: &[String]) {
    if let Err(e) = bus.ack(stream, group, ids).await {
        tracing::error!(%stream, "acknowledging: {e}");
    }
}
