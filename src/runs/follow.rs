//! Followers of runs' event logs (the SSE streams): one thread per front waits on every
//! followed run at once ([`RunLog::wait`]: one `XREAD BLOCK` over all their streams in the
//! cluster, a condition variable in `serve`) and hands each follower the events after its
//! cursor. A follower that goes away is dropped at the next wake.

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::event::RunEvent;
use super::log::RunLog;

/// How long one wait lasts: a new follower joins the wait within this.
const WAIT: Duration = Duration::from_millis(100);

struct Sub {
    run_id: String,
    after: Option<u64>,
    out: UnboundedSender<RunEvent>,
}

pub struct Followers {
    new: Sender<Sub>,
}

impl Followers {
    /// Starts the follower thread over `log`.
    pub fn start(log: Arc<dyn RunLog>) -> Self {
        let (new, rx) = channel();
        std::thread::Builder::new()
            .name("run-followers".into())
            .spawn(move || follow(log.as_ref(), &rx))
            .ok();
        Self { new }
    }

    /// The events of `run_id` after sequence `after` (all for `None`) as they are appended.
    pub fn follow(&self, run_id: &str, after: Option<u64>) -> UnboundedReceiver<RunEvent> {
        let (out, rx) = unbounded_channel();
        let _ = self.new.send(Sub {
            run_id: run_id.to_string(),
            after,
            out,
        });
        rx
    }
}

fn follow(log: &dyn RunLog, new: &Receiver<Sub>) {
    let mut subs: Vec<Sub> = Vec::new();
    loop {
        if subs.is_empty() {
            match new.recv_timeout(Duration::from_secs(3600)) {
                Ok(s) => subs.push(s),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        subs.extend(new.try_iter());
        subs.retain(|s| !s.out.is_closed());
        // Each run is waited on from its earliest follower's cursor.
        let mut cursors: HashMap<&str, Option<u64>> = HashMap::new();
        for s in &subs {
            cursors
                .entry(s.run_id.as_str())
                .and_modify(|c| *c = (*c).min(s.after))
                .or_insert(s.after);
        }
        let cursors: Vec<(String, Option<u64>)> = cursors
            .into_iter()
            .map(|(r, c)| (r.to_string(), c))
            .collect();
        let grown = match log.wait(&cursors, WAIT) {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "following runs' events");
                std::thread::sleep(WAIT * 5);
                continue;
            }
        };
        let grown: HashMap<String, Vec<RunEvent>> = grown.into_iter().collect();
        for s in &mut subs {
            let Some(events) = grown.get(&s.run_id) else {
                continue;
            };
            for e in events {
                if s.after.is_none_or(|a| e.sequence > a) {
                    let _ = s.out.send(e.clone());
                    s.after = Some(e.sequence);
                }
            }
        }
    }
}
