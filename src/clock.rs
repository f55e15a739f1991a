//! The wall clock, in the units the system stores and sends: Unix seconds (ledger entries,
//! hold leases, OpenAI's `created`), milliseconds (heartbeats) and nanoseconds (a fallback
//! for randomness). A clock before 1970 reads as 0.

use std::time::{SystemTime, UNIX_EPOCH};

fn since_epoch() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Unix seconds now.
pub fn unix_secs() -> i64 {
    since_epoch().as_secs() as i64
}

/// Unix milliseconds now.
pub fn unix_ms() -> u64 {
    since_epoch().as_millis() as u64
}

/// Unix nanoseconds now.
pub fn unix_nanos() -> u128 {
    since_epoch().as_nanos()
}
