//! Redis keys beside the bus's streams: values a key holds (with an expiry or not) and a
//! lease that one node holds at a time. The cluster keeps its leader lease, pool view and
//! model cards here ([`crate::cluster::state`] says which keys and what they hold); this
//! module knows only bytes and Redis.
//!
//! The lease is taken with `SET NX PX` and renewed by a script that extends it only for its
//! holder, so a holder that stalls past the lease loses it and cannot renew a lease another
//! node has since taken.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Client, RedisError, Script};

use super::redis::connection_manager;

/// Extends the lease only if this node still holds it.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

#[derive(Clone)]
pub struct RedisKeys {
    conn: ConnectionManager,
}

impl RedisKeys {
    pub async fn connect(url: &str) -> Result<Self, RedisError> {
        let client = Client::open(url)?;
        Ok(Self {
            conn: connection_manager(&client).await?,
        })
    }

    /// Takes the lease `key` for `holder`, or keeps it if `holder` has it; true if `holder`
    /// holds it for the next `ttl`.
    pub async fn lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, RedisError> {
        let mut c = self.conn.clone();
        let ms = ttl.as_millis() as u64;
        let renewed: i64 = Script::new(RENEW)
            .key(key)
            .arg(holder)
            .arg(ms)
            .invoke_async(&mut c)
            .await?;
        if renewed == 1 {
            return Ok(true);
        }
        let taken: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(holder)
            .arg("NX")
            .arg("PX")
            .arg(ms)
            .query_async(&mut c)
            .await?;
        Ok(taken.is_some())
    }

    /// Sets `key` to `value`, expiring after `ttl` if given.
    pub async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), RedisError> {
        let mut c = self.conn.clone();
        match ttl {
            Some(t) => c.pset_ex(key, value, t.as_millis() as u64).await,
            None => c.set(key, value).await,
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RedisError> {
        let mut c = self.conn.clone();
        c.get(key).await
    }
}
