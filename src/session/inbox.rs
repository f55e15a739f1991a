//! This node's inboxes: the bus streams on which workers and the coordinator answer the
//! node's sessions. A reader consumes each and hands each message to the session of its job
//! (by correlation id), so a session needs no bus reader of its own. Messages for a session
//! that has ended are dropped: its job was cancelled when it ended.
//!
//! Every streamed token passes through here, so each thread that runs sessions (each HTTP
//! worker thread) has an inbox of its own, read on that thread: a token goes from the bus
//! to its session's mailbox and out as an SSE chunk without changing threads, no thread
//! reads for all the others (a preempted one holds up only its own streams), and the
//! node's reading scales with its threads. A session names its thread's stream as its
//! job's `reply_to`. The table of sessions is shared with the sessions, which enter
//! themselves before their placement is sent (so no answer can come before its session is
//! in the table) and leave when they stop.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, Weak};
use std::thread::{self, ThreadId};
use std::time::{Instant, SystemTime};

use actix::{Message, Recipient};
use tokio::task::JoinHandle;

use crate::bus::{read_stream, Ack, Bus, Delivery};
use crate::locks::lock;
use crate::protocol::{streams, NodeMessage};

/// A message about one session's job, and the node that sent it.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct JobUpdate {
    pub message: NodeMessage,
    pub sender: String,
    pub arrival: Arrival,
}

/// When a message reached this node, for the front's per-token timings.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// When it came off the bus.
    pub read: Instant,
    /// When its entry was appended to the stream, where the bus keeps that.
    pub appended: Option<SystemTime>,
}

impl Arrival {
    /// Now, for text made on this node (not read off the bus).
    pub fn now() -> Self {
        Self {
            read: Instant::now(),
            appended: None,
        }
    }
}

type Sessions = Mutex<HashMap<String, Recipient<JobUpdate>>>;

/// The node's inboxes, one per thread that runs sessions, each started by the first
/// session of its thread.
pub struct NodeInboxes {
    bus: Arc<dyn Bus>,
    node_id: String,
    threads: Mutex<Threads>,
}

#[derive(Default)]
struct Threads {
    /// Inboxes started so far, which numbers the next one's stream.
    started: usize,
    by_thread: HashMap<ThreadId, Arc<NodeInbox>>,
}

impl NodeInboxes {
    pub fn new(bus: Arc<dyn Bus>, node_id: &str) -> Self {
        Self {
            bus,
            node_id: node_id.to_string(),
            threads: Mutex::default(),
        }
    }

    /// The calling thread's inbox, started on its actix arbiter if it has none that is
    /// read (a thread that ended took its inbox's reader with it, so those are let go).
    pub fn here(&self) -> Arc<NodeInbox> {
        let mut threads = lock(&self.threads);
        let thread = thread::current().id();
        if let Some(inbox) = threads.by_thread.get(&thread).filter(|i| i.is_reading()) {
            return Arc::clone(inbox);
        }
        threads.by_thread.retain(|_, i| i.is_reading());
        let inbox = Arc::new(NodeInbox::start(
            Arc::clone(&self.bus),
            &format!("{}.{}", self.node_id, threads.started),
        ));
        threads.started += 1;
        threads.by_thread.insert(thread, Arc::clone(&inbox));
        inbox
    }
}

/// One thread's inbox: a stream, its reader, and the sessions it routes to.
pub struct NodeInbox {
    stream: String,
    sessions: Arc<Sessions>,
    reader: JoinHandle<()>,
}

impl NodeInbox {
    /// Starts reading the stream named `name` ([`streams::node`]), on the current actix
    /// arbiter, until dropped.
    fn start(bus: Arc<dyn Bus>, name: &str) -> Self {
        let sessions = Arc::new(Sessions::default());
        let table = Arc::downgrade(&sessions);
        let stream = streams::node(name);
        let reader = actix::spawn(read_stream(
            bus,
            stream.clone(),
            streams::SESSION_GROUP.into(),
            name.to_string(),
            Ack::OnRead,
            move |d| route(&table, d),
        ));
        Self {
            stream,
            sessions,
            reader,
        }
    }

    /// The stream workers answer this inbox's sessions on (their jobs' `reply_to`).
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Whether the inbox is still read (a session with no reader would wait forever).
    fn is_reading(&self) -> bool {
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

/// Hands one message to its session; stops the reader once the inbox is gone (and with it
/// every session that could be answered on its stream).
fn route(table: &Weak<Sessions>, delivery: Delivery) -> ControlFlow<()> {
    let Some(sessions) = table.upgrade() else {
        return ControlFlow::Break(());
    };
    let env = delivery.envelope;
    match env.payload::<NodeMessage>() {
        Ok(message) => {
            if let Some(session) = lock(&sessions).get(&env.correlation_id) {
                session.do_send(JobUpdate {
                    message,
                    sender: env.sender,
                    arrival: Arrival {
                        read: Instant::now(),
                        appended: delivery.appended,
                    },
                });
            }
        }
        Err(e) => tracing::warn!(kind = %env.kind, "dropping an unreadable job message: {e}"),
    }
    ControlFlow::Continue(())
}
