//! One entry of a run's event log: `{sequence, type, at, payload}` as contract §3 sends it
//! (in `run.events`, `GET …/events` and the SSE stream). Sequences start at 0 and rise by
//! exactly one; the log is the run, and [`super::state`] folds it into the snapshot.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    pub sequence: u64,
    #[serde(rename = "type")]
    pub kind: String,
    /// ISO 8601, UTC, milliseconds.
    pub at: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub payload: Value,
}

impl RunEvent {
    /// Event `kind` with `payload`, stamped now; its sequence is set when it is appended.
    pub fn new(kind: &str, payload: Value) -> Self {
        Self {
            sequence: 0,
            kind: kind.to_string(),
            at: iso_now(),
            payload,
        }
    }

    /// Whether the run ends with this event.
    pub fn is_terminal(&self) -> bool {
        TERMINAL.contains(&self.kind.as_str())
    }
}

/// The events that end a run (one of them is its last).
pub const TERMINAL: [&str; 4] = [
    "run_completed",
    "run_partial_failure",
    "run_failed",
    "run_cancelled",
];

/// Now, as the log writes times.
pub fn iso_now() -> String {
    iso(crate::clock::unix_ms())
}

/// Unix milliseconds as ISO 8601.
pub fn iso(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// ISO 8601 back to Unix milliseconds.
pub fn parse_iso(s: &str) -> Option<u64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
}
