//! What makes any worker (an LLM's or a media worker) a member of the pool, whatever it
//! runs: reading its bus inbox, and heartbeating its registration and load to the
//! coordinator.

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;

use crate::bus::{read_stream, Ack, Bus, BusFuture};
use crate::clock::unix_ms;
use crate::protocol::{self, streams, Heartbeat, WorkerCommand, WorkerInfo, WorkerLoad};

/// Reads worker `worker_id`'s inbox until `deliver` breaks (its actor is gone), handing it
/// each command with its sender's trace context. Unreadable commands are logged and dropped.
pub fn read_inbox(
    bus: Arc<dyn Bus>,
    worker_id: &str,
    mut deliver: impl FnMut(WorkerCommand, Option<String>) -> ControlFlow<()>,
) -> impl Future<Output = ()> {
    read_stream(
        bus,
        streams::worker(worker_id),
        streams::WORKER_GROUP.into(),
        worker_id.to_string(),
        Ack::Explicit,
        move |d| {
            let env = d.envelope;
            match env.payload::<WorkerCommand>() {
                Ok(c) => deliver(c, env.traceparent),
                Err(e) => {
                    tracing::warn!(kind = %env.kind, "dropping an unreadable worker command: {e}");
                    ControlFlow::Continue(())
                }
            }
        },
    )
}

/// A heartbeat of `info` as it is now, to be sent.
pub fn heartbeat(
    bus: &Arc<dyn Bus>,
    info: &WorkerInfo,
    load: WorkerLoad,
    received: Vec<String>,
    leaving: bool,
) -> BusFuture<'static, ()> {
    let beat = Heartbeat {
        info: info.clone(),
        load,
        received,
        leaving,
        sent_at_ms: unix_ms(),
    };
    let bus = Arc::clone(bus);
    Box::pin(async move { protocol::heartbeat(bus.as_ref(), &beat).await })
}

/// Sends a heartbeat without waiting for it; a failure is logged (the next one follows).
pub fn in_background(sent: BusFuture<'static, ()>) {
    actix::spawn(async move {
        if let Err(e) = sent.await {
            tracing::warn!("sending a heartbeat: {e}");
        }
    });
}
