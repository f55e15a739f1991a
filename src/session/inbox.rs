//! This node's inbox: the bus stream on which workers and the coordinator answer the
//! node's sessions. One reader consumes it and hands each message to the session of its job
//! (by correlation id), so a session needs no bus reader of its own. Messages for a session
//! that has ended are dropped: its job was cancelled when it ended.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, AsyncContext, Context, Handler, Message, Recipient, WrapFuture};

use crate::bus::{read_stream, streams, Bus};
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

pub struct NodeInbox {
    bus: Arc<dyn Bus>,
    node_id: String,
    sessions: HashMap<String, Recipient<JobUpdate>>,
}

impl NodeInbox {
    pub fn new(bus: Arc<dyn Bus>, node_id: &str) -> Self {
        Self { bus, node_id: node_id.to_string(), sessions: HashMap::new() }
    }
}

impl Actor for NodeInbox {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address().downgrade();
        let read = read_stream(Arc::clone(&self.bus), streams::node(&self.node_id), GROUP.into(), self.node_id.clone(), move |env| {
            let Some(me) = me.upgrade() else { return ControlFlow::Break(()) };
            match env.payload::<NodeMessage>() {
                Ok(message) => me.do_send(Deliver { job_id: env.correlation_id, update: JobUpdate { message, sender: env.sender, received: Instant::now() } }),
                Err(e) => tracing::warn!(kind = %env.kind, "dropping an unreadable job message: {e}"),
            }
            ControlFlow::Continue(())
        });
        ctx.spawn(read.into_actor(self));
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Deliver {
    job_id: String,
    update: JobUpdate,
}

impl Handler<Deliver> for NodeInbox {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _: &mut Context<Self>) {
        if let Some(session) = self.sessions.get(&msg.job_id) {
            session.do_send(msg.update);
        }
    }
}

/// Route the events of `job_id` to `session` until [`Unsubscribe`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub job_id: String,
    pub session: Recipient<JobUpdate>,
}

impl Handler<Subscribe> for NodeInbox {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        self.sessions.insert(msg.job_id, msg.session);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe(pub String);

impl Handler<Unsubscribe> for NodeInbox {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) {
        self.sessions.remove(&msg.0);
    }
}
