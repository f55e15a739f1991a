//! Publishing to Redis in batches without waiting to batch. Every token a worker streams is
//! a message, and at tens of thousands of tokens a second one `XADD` each (one stream entry
//! for Redis to store, hand out, track as pending and acknowledge, and one for the reader to
//! parse) costs the worker, Redis and the reading front far more than the tokens
//! themselves. So each stream gets one writer task: a publish joins the stream's queue, and
//! the writer packs everything queued into one entry, envelopes back to back
//! ([`super::Envelope::unpack`] reads them), written with one `XADD`, then the next batch.
//!
//! Nothing waits for a batch to fill: a publish to an idle stream goes out at once, and only
//! what arrives while a write is in flight shares the next one, so batches grow with load
//! and latency does not. A stream's messages keep the order of its publishes; those packed
//! together share an entry id, and are acknowledged and claimed together.
//!
//! A writer that has been idle for [`IDLE`] ends, so a coordinator that once wrote to
//! thousands of worker inboxes does not keep thousands of tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

use super::BusError;

/// The entry field that holds the envelopes.
pub const FIELD: &str = "m";
/// Messages packed into one entry at most.
const MAX_BATCH: usize = 512;
/// How long a stream's writer waits for more before it ends.
const IDLE: Duration = Duration::from_secs(30);

/// One message to append, and who waits for its entry's id.
struct Publish {
    bytes: Vec<u8>,
    max_len: usize,
    done: oneshot::Sender<Result<String, BusError>>,
}

type Queues = Arc<Mutex<HashMap<String, UnboundedSender<Publish>>>>;

/// The writers of one connection's streams.
pub struct Coalescer {
    connection: ConnectionManager,
    queues: Queues,
}

impl Coalescer {
    pub fn new(connection: ConnectionManager) -> Self {
        Self {
            connection,
            queues: Arc::default(),
        }
    }

    /// Queues `bytes` for `stream` (which keeps about `max_len` entries) now, behind what
    /// was queued before; the future gives the entry id once the batch is written.
    pub fn publish(
        &self,
        stream: &str,
        bytes: Vec<u8>,
        max_len: usize,
    ) -> impl std::future::Future<Output = Result<String, BusError>> + Send + 'static {
        let (done, id) = oneshot::channel();
        self.enqueue(
            stream,
            Publish {
                bytes,
                max_len,
                done,
            },
        );
        async move {
            id.await
                .map_err(|_| BusError::Transport("the stream's writer stopped".into()))?
        }
    }

    fn enqueue(&self, stream: &str, publish: Publish) {
        // Sending under the lock: a writer ends only under it, after finding its queue empty,
        // so a publish either reaches a live writer or finds none and starts one.
        let mut queues = crate::locks::lock(&self.queues);
        let publish = match queues.get(stream) {
            Some(q) => match q.send(publish) {
                Ok(()) => return,
                Err(returned) => returned.0,
            },
            None => publish,
        };
        let (tx, rx) = unbounded_channel();
        // A new channel's receiver is alive, so this send succeeds.
        let _ = tx.send(publish);
        queues.insert(stream.to_string(), tx);
        tokio::spawn(write(
            stream.to_string(),
            rx,
            self.connection.clone(),
            Arc::clone(&self.queues),
        ));
    }
}

/// One stream's writer: an entry per round trip until idle.
async fn write(
    stream: String,
    mut queue: UnboundedReceiver<Publish>,
    mut connection: ConnectionManager,
    queues: Queues,
) {
    loop {
        let first = match tokio::time::timeout(IDLE, queue.recv()).await {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(_) => {
                let mut all = crate::locks::lock(&queues);
                match queue.try_recv() {
                    Ok(p) => p,
                    Err(_) => {
                        all.remove(&stream);
                        return;
                    }
                }
            }
        };
        // Let the tasks already due run first: what they publish (a job's first token
        // right behind its acceptance, other jobs' events) joins this round trip instead of
        // waiting for the next. It costs one pass of the run queue, never a timer.
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let max_len = batch.iter().map(|p| p.max_len).max().unwrap_or(1).max(1);
        let mut packed = Vec::with_capacity(batch.iter().map(|p| p.bytes.len()).sum());
        batch
            .iter()
            .for_each(|p| packed.extend_from_slice(&p.bytes));
        let appended: Result<String, _> = redis::cmd("XADD")
            .arg(&stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(max_len)
            .arg("*")
            .arg(FIELD)
            .arg(packed)
            .query_async(&mut connection)
            .await;
        for p in batch {
            let _ = p.done.send(
                appended
                    .as_ref()
                    .map(String::clone)
                    .map_err(|e| BusError::Transport(e.to_string())),
            );
        }
    }
}
