//! Per-key request limits: requests in flight and requests started in the last minute.
//! Over either, a request gets 429 with the seconds until it would be admitted, so clients
//! back off by `Retry-After` instead of guessing. The state lives with the key's account in
//! [`Billing`](super::accounts::Billing), which admits requests one at a time under a lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

const WINDOW: Duration = Duration::from_secs(60);

/// The limits of one API key; 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyLimits {
    pub max_concurrent: u32,
    pub requests_per_minute: u32,
}

impl Default for KeyLimits {
    fn default() -> Self {
        Self {
            max_concurrent: 32,
            requests_per_minute: 600,
        }
    }
}

/// Why a request was not admitted, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Limited {
    pub message: String,
    pub retry_after_secs: u64,
}

/// One admitted request; dropping it ends the request for the concurrency count.
#[derive(Debug)]
pub struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What one key has in flight and started recently.
#[derive(Debug, Default)]
pub struct KeyWindow {
    started: VecDeque<Instant>,
    in_flight: Arc<AtomicUsize>,
}

impl KeyWindow {
    pub fn admit(&mut self, limits: KeyLimits, now: Instant) -> Result<Permit, Limited> {
        while self
            .started
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            self.started.pop_front();
        }
        let rpm = limits.requests_per_minute as usize;
        if rpm > 0 && self.started.len() >= rpm {
            let oldest = self.started.front().copied().unwrap_or(now);
            let wait = WINDOW.saturating_sub(now.duration_since(oldest));
            return Err(Limited {
                message: format!("Rate limit reached: {rpm} requests per minute for this API key"),
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            });
        }
        let max = limits.max_concurrent as usize;
        if max > 0 && self.in_flight.load(Ordering::SeqCst) >= max {
            return Err(Limited {
                message: format!(
                    "Too many concurrent requests: at most {max} at once for this API key"
                ),
                retry_after_secs: 1,
            });
        }
        self.started.push_back(now);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Ok(Permit(Arc::clone(&self.in_flight)))
    }

    /// Nothing in flight and nothing started within the window.
    pub fn is_idle(&self, now: Instant) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
            && self
                .started
                .back()
                .is_none_or(|t| now.duration_since(*t) >= WINDOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_frees_on_drop_and_the_minute_slides() {
        let limits = KeyLimits {
            max_concurrent: 2,
            requests_per_minute: 3,
        };
        let mut w = KeyWindow::default();
        let t0 = Instant::now();
        let a = w.admit(limits, t0).expect("first");
        let _b = w.admit(limits, t0).expect("second");
        let e = w.admit(limits, t0).expect_err("a third at once");
        assert_eq!(e.retry_after_secs, 1);
        drop(a);
        let _c = w
            .admit(limits, t0 + Duration::from_secs(10))
            .expect("room again");
        let e = w
            .admit(limits, t0 + Duration::from_secs(20))
            .expect_err("the fourth in a minute");
        assert!(e.message.contains("3 requests per minute"), "{}", e.message);
        assert_eq!(e.retry_after_secs, 40);
        assert!(!w.is_idle(t0 + Duration::from_secs(20)));
        drop(_b);
        drop(_c);
        assert!(
            w.admit(limits, t0 + Duration::from_secs(60)).is_ok(),
            "the first start left the window"
        );
        let unlimited = KeyLimits {
            max_concurrent: 0,
            requests_per_minute: 0,
        };
        let held: Vec<_> = (0..100)
            .map(|_| w.admit(unlimited, t0).expect("no limit"))
            .collect();
        assert_eq!(held.len(), 100);
    }
}
