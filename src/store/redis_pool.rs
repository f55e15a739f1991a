//! Blocking Redis connections shared by the cluster's stores ([`super::redis::RedisStore`]
//! and the durable runs' log): each call takes an idle connection or opens one, and a
//! connection that failed is dropped, so the next call reconnects (Redis may have restarted).

use std::sync::Mutex;
use std::time::Duration;

use redis::{Client, Connection, RedisError};

/// Idle connections kept for reuse; more are opened under load and closed after.
const MAX_IDLE: usize = 256;

pub struct Pool {
    client: Client,
    idle: Mutex<Vec<Connection>>,
    timeout: Duration,
}

impl Pool {
    /// A pool for `url` whose calls time out after `timeout`; fails at once if the URL is bad.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, RedisError> {
        Ok(Self {
            client: Client::open(url)?,
            idle: Mutex::new(Vec::new()),
            timeout,
        })
    }

    /// A new connection of the caller's own whose reads wait at most `read_timeout` (for
    /// blocking commands that wait longer than the pool's calls).
    pub fn dedicated(&self, read_timeout: Duration) -> Result<Connection, RedisError> {
        let c = self.client.get_connection_with_timeout(self.timeout)?;
        c.set_read_timeout(Some(read_timeout))?;
        c.set_write_timeout(Some(self.timeout))?;
        Ok(c)
    }

    /// Runs `f` on a connection of its own.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, RedisError> {
        let idle = crate::locks::lock(&self.idle).pop();
        let mut c = match idle {
            Some(c) => c,
            None => self.dedicated(self.timeout)?,
        };
        let r = f(&mut c);
        let broken = r.as_ref().err().is_some_and(|e| {
            e.is_io_error()
                || e.is_connection_dropped()
                || e.is_timeout()
                || e.is_connection_refusal()
        });
        if !broken {
            let mut idle = crate::locks::lock(&self.idle);
            if idle.len() < MAX_IDLE {
                idle.push(c);
            }
        }
        r
    }
}
