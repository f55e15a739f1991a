//! The executor's pen: appends events to the run's log (fenced by its lease) and applies
//! each to the run's state, so the state in memory is always the fold of the log. LLM text
//! is buffered and written as one `assistant_message_delta` per [`COALESCE`], so a long
//! answer is tens of events, not thousands.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::blocking;
use super::event::RunEvent;
use super::log::{LogError, RunLog};
use super::state::RunState;

/// The longest LLM text waits before it is written.
pub const COALESCE: Duration = Duration::from_millis(200);

pub struct Journal {
    log: Arc<dyn RunLog>,
    owner: String,
    pub state: RunState,
    delta: String,
    delta_round: u32,
    delta_since: Option<Instant>,
}

impl Journal {
    pub fn new(log: Arc<dyn RunLog>, owner: String, state: RunState) -> Self {
        Self {
            log,
            owner,
            state,
            delta: String::new(),
            delta_round: 0,
            delta_since: None,
        }
    }

    pub fn run_id(&self) -> &str {
        &self.state.run_id
    }

    /// Appends `events` (kind, payload) in one write, after any buffered text.
    pub async fn append(&mut self, events: Vec<(&str, Value)>) -> Result<(), LogError> {
        let mut batch = self.take_delta();
        batch.extend(events.into_iter().map(|(k, p)| RunEvent::new(k, p)));
        self.write(batch).await
    }

    /// Buffers LLM text of `round`.
    pub fn text(&mut self, round: u32, content: &str) {
        if self.delta_since.is_none() {
            self.delta_since = Some(Instant::now());
        }
        self.delta_round = round;
        self.delta.push_str(content);
    }

    /// When the buffered text is due to be written, if any is buffered.
    pub fn delta_due(&self) -> Option<Instant> {
        self.delta_since.map(|t| t + COALESCE)
    }

    /// Writes the buffered text now.
    pub async fn flush(&mut self) -> Result<(), LogError> {
        let batch = self.take_delta();
        self.write(batch).await
    }

    fn take_delta(&mut self) -> Vec<RunEvent> {
        if self.delta_since.take().is_none() {
            return Vec::new();
        }
        let content = std::mem::take(&mut self.delta);
        vec![RunEvent::new(
            "assistant_message_delta",
            json!({"round": self.delta_round, "content": content}),
        )]
    }

    async fn write(&mut self, mut batch: Vec<RunEvent>) -> Result<(), LogError> {
        if batch.is_empty() {
            return Ok(());
        }
        let next = self.state.next_sequence();
        for (i, e) in batch.iter_mut().enumerate() {
            e.sequence = next + i as u64;
        }
        let (log, owner, run, events) = (
            Arc::clone(&self.log),
            self.owner.clone(),
            self.state.run_id.clone(),
            batch.clone(),
        );
        blocking(move || log.append(&run, &owner, &events)).await?;
        for e in &batch {
            self.state.apply(e);
        }
        Ok(())
    }
}
