//! This node's inbox: the bus stream on which workers and the coordinator answer the
//! node's sessions. One reader consumes it and hands each message to the session of its job
//! (by correlation id), so a session needs no bus reader of its own. Messages for a session
//! that has ended are dropped: its job was cancelled when it ended.
//!
//! Every streamed token passes through here, so the reader routes it straight to its
//! session's mailbox, with no actor of its own in between: the table of sessions is shared
//! with the sessions, which enter themselves before their placement is sent (so no answer
//! can come before its session is in the table) and leave when they stop.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Instant, SystemTime};

use actix::{Message, Recipient};
use tokio::task::JoinHandle;

use crate::bus::{read_stream, streams, Bus, Delivery};
use crate::telemetry::metrics;
use crate::worker::protocol::NodeMessage;

const GROUP: &str = "sessions";

/// A message about one session's job, and the node that sent it.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct JobUpdate {
    pub message: NodeMessage,
    pub sender: String,
    /// When it came off the bus.
    pub received: Instant,
}

type Sessions = Mutex<HashMap<String, Recipient<JobUpdate>>>;

pub struct NodeInbox {
    sessions: Arc<Sessions>,
    reader: JoinHandle<()>,
}

impl NodeInbox {
    /// Starts reading `node_id`'s stream, on the current actix arbiter, until dropped.
    pub fn start(bus: Arc<dyn Bus>, node_id: &str) -> Self {
        let sessions = Arc::new(Sessions::default());
        let table = Arc::downgrade(&sessions);
        let reader = actix::spawn(read_stream(bus, streams::node(node_id), GROUP.into(), node_id.to_string(), move |d| route(&table, d)));
        Self { sessions, reader }
    }

    /// Whether the inbox is still read (a session with no reader would wait forever).
    pub fn is_reading(&self) -> bool {
        !self.reader.is_finished()
    }

    /// Routes the messages of `job_id` to `session` until [`unsubscribe`](Self::unsubscribe).
    pub fn subscribe(&self, job_id: &str, session: Recipient<JobUpdate>) {
        lock(&self.sessions).insert(job_id.to_string(), session);
    }

    pub fn unsubscribe(&self, job_id: &str) {
        lock(&self.sessions).remove(job_id);
    }
}

impl Drop for NodeInbox {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Hands one message to its session; stops the reader once the inbox is gone (what it did
/// not take stays pending for the node's next reader).
fn route(table: &Weak<Sessions>, delivery: Delivery) -> ControlFlow<()> {
    let Some(sessions) = table.upgrade() else { return ControlFlow::Break(()) };
    if let Some(waited) = delivery.appended.and_then(|at| SystemTime::now().duration_since(at).ok()) {
        metrics::front().stream_wait.observe(waited.as_secs_f64());
    }
    let env = delivery.envelope;
    match env.payload::<NodeMessage>() {
        Ok(message) => {
            if let Some(session) = lock(&sessions).get(&env.correlation_id) {
                session.do_send(JobUpdate { message, sender: env.sender, received: Instant::now() });
            }
        }
        Err(e) => tracing::warn!(kind = %env.kind, "dropping an unreadable job message: {e}"),
    }
    ControlFlow::Continue(())
}

fn lock(sessions: &Sessions) -> std::sync::MutexGuard<'_, HashMap<String, Recipient<JobUpdate>>> {
    sessions.lock().unwrap_or_else(|e| e.into_inner())
}
