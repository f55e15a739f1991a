//! The in-process [`Bus`]: streams in memory with Redis-stream semantics (groups, pending
//! entries, claiming), for `supernet serve`. Entries are kept as wire bytes, so the codec
//! runs exactly as it will over Redis.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{Ack, Bus, BusError, BusFuture, Delivery, Envelope};

struct Entry {
    seq: u64,
    bytes: Vec<u8>,
}

/// A delivered, unacknowledged entry: when it was (re)delivered. (Consumer names matter
/// only to Redis; here an entry's idle time is all that decides a claim.)
struct Pending {
    since: Instant,
}

struct Group {
    /// The next sequence number to deliver.
    cursor: u64,
    pending: BTreeMap<u64, Pending>,
}

#[derive(Default)]
struct Stream {
    entries: VecDeque<Entry>,
    next_seq: u64,
    groups: HashMap<String, Group>,
}

impl Stream {
    fn bytes(&self, seq: u64) -> Option<&[u8]> {
        let first = self.entries.front()?.seq;
        let i = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.entries.get(i).map(|e| e.bytes.as_slice())
    }

    /// The group, created on first use at the oldest retained entry, so nothing published
    /// before its first consumer started is missed.
    fn group(&mut self, name: &str) -> &mut Group {
        let start = self.entries.front().map_or(self.next_seq, |e| e.seq);
        self.groups
            .entry(name.to_string())
            .or_insert_with(|| Group {
                cursor: start,
                pending: BTreeMap::new(),
            })
    }
}

/// A blob and when it expires.
struct Blob {
    bytes: Vec<u8>,
    until: Instant,
}

#[derive(Default)]
pub struct MemoryBus {
    streams: Mutex<HashMap<String, Stream>>,
    published: Notify,
    blobs: Mutex<HashMap<String, Blob>>,
}

fn delivery(seq: u64, bytes: &[u8]) -> Result<Delivery, BusError> {
    Ok(Delivery {
        id: seq.to_string(),
        envelope: Envelope::from_bytes(bytes)?,
        appended: None,
    })
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Stream>> {
        // A panic elsewhere cannot leave a stream half-updated: every change is one step.
        crate::locks::lock(&self.streams)
    }

    /// The blobs, with those expired gone.
    fn live_blobs(&self) -> MutexGuard<'_, HashMap<String, Blob>> {
        let mut blobs = crate::locks::lock(&self.blobs);
        let now = Instant::now();
        blobs.retain(|_, b| b.until > now);
        blobs
    }

    /// New entries for the group, now, without waiting.
    fn take_new(
        &self,
        stream: &str,
        group: &str,
        max: usize,
        ack: Ack,
    ) -> Result<Vec<Delivery>, BusError> {
        let mut streams = self.lock();
        let s = streams.entry(stream.to_string()).or_default();
        let first = s.entries.front().map_or(s.next_seq, |e| e.seq);
        let next_seq = s.next_seq;
        let g = s.group(group);
        g.cursor = g.cursor.max(first);
        let seqs: Vec<u64> = (g.cursor..next_seq).take(max).collect();
        if ack == Ack::Explicit {
            let now = Instant::now();
            for &seq in &seqs {
                g.pending.insert(seq, Pending { since: now });
            }
        }
        g.cursor += seqs.len() as u64;
        seqs.iter()
            .filter_map(|&seq| s.bytes(seq).map(|b| delivery(seq, b)))
            .collect()
    }
}

impl Bus for MemoryBus {
    fn publish<'a>(
        &'a self,
        stream: &'a str,
        envelope: Envelope,
        max_len: usize,
    ) -> BusFuture<'a, String> {
        let appended = envelope.to_bytes().map(|bytes| {
            let seq = {
                let mut streams = self.lock();
                let s = streams.entry(stream.to_string()).or_default();
                let seq = s.next_seq;
                s.next_seq += 1;
                s.entries.push_back(Entry { seq, bytes });
                while s.entries.len() > max_len.max(1) {
                    s.entries.pop_front();
                }
                seq
            };
            self.published.notify_waiters();
            seq.to_string()
        });
        Box::pin(std::future::ready(appended))
    }

    fn consume<'a>(
        &'a self,
        stream: &'a str,
        group: &'a str,
        _consumer: &'a str,
        max: usize,
        block: Duration,
        ack: Ack,
    ) -> BusFuture<'a, Vec<Delivery>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + block;
            loop {
                // Register for the wake-up before looking, so a publish in between is seen.
                let notified = self.published.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let got = self.take_new(stream, group, max, ack)?;
                if !got.is_empty() || tokio::time::Instant::now() >= deadline {
                    return Ok(got);
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return Ok(Vec::new());
                }
            }
        })
    }

    fn ack<'a>(&'a self, stream: &'a str, group: &'a str, ids: &'a [String]) -> BusFuture<'a, ()> {
        Box::pin(async move {
            let mut streams = self.lock();
            if let Some(g) = streams
                .get_mut(stream)
                .and_then(|s| s.groups.get_mut(group))
            {
                for id in ids {
                    if let Ok(seq) = id.parse::<u64>() {
                        g.pending.remove(&seq);
                    }
                }
            }
            Ok(())
        })
    }

    fn claim_stale<'a>(
        &'a self,
        stream: &'a str,
        group: &'a str,
        _consumer: &'a str,
        min_idle: Duration,
        max: usize,
    ) -> BusFuture<'a, Vec<Delivery>> {
        Box::pin(async move {
            let mut streams = self.lock();
            let Some(s) = streams.get_mut(stream) else {
                return Ok(Vec::new());
            };
            let Some(g) = s.groups.get_mut(group) else {
                return Ok(Vec::new());
            };
            let now = Instant::now();
            let stale: Vec<u64> = g
                .pending
                .iter()
                .filter(|(_, p)| now.duration_since(p.since) >= min_idle)
                .map(|(&seq, _)| seq)
                .take(max)
                .collect();
            for seq in &stale {
                g.pending.insert(*seq, Pending { since: now });
            }
            let mut out = Vec::new();
            for seq in stale {
                match s.bytes(seq) {
                    Some(b) => out.push(delivery(seq, b)?),
                    // Trimmed away: nothing left to deliver, so nothing stays pending.
                    None => {
                        if let Some(g) = s.groups.get_mut(group) {
                            g.pending.remove(&seq);
                        }
                    }
                }
            }
            Ok(out)
        })
    }

    fn put_blob<'a>(&'a self, key: &'a str, bytes: &'a [u8], ttl: Duration) -> BusFuture<'a, ()> {
        let blob = Blob {
            bytes: bytes.to_vec(),
            until: Instant::now() + ttl,
        };
        self.live_blobs().insert(key.to_string(), blob);
        Box::pin(std::future::ready(Ok(())))
    }

    fn get_blob<'a>(&'a self, key: &'a str) -> BusFuture<'a, Option<Vec<u8>>> {
        let got = self.live_blobs().get(key).map(|b| b.bytes.clone());
        Box::pin(std::future::ready(Ok(got)))
    }

    fn keep_blob<'a>(&'a self, key: &'a str, ttl: Duration) -> BusFuture<'a, bool> {
        let kept = self
            .live_blobs()
            .get_mut(key)
            .map(|b| b.until = Instant::now() + ttl)
            .is_some();
        Box::pin(std::future::ready(Ok(kept)))
    }

    fn drop_blob<'a>(&'a self, key: &'a str) -> BusFuture<'a, ()> {
        self.live_blobs().remove(key);
        Box::pin(std::future::ready(Ok(())))
    }
}
