//! The cluster's Redis keys beside the bus streams (see [`crate::bus::redis`]). Like the streams
//! they carry the protocol version, since they hold its messages (bincode).
//!
//! | key | written by | value |
//! |---|---|---|
//! | `sn:v2:coordinator:leader` | the leader (`SET NX PX`, renewed) | the leader's node id |
//! | `sn:v2:pool` | the leader, every tick (expires) | [`PoolView`] (bincode) |
//! | `sn:v2:card:{model}` | each worker at start | [`ModelCard`] (bincode) |
//!
//! The lease is what makes one coordinator the leader: it is taken with `SET NX PX` and
//! renewed by a script that extends it only for its holder, so a leader that stalls past
//! the lease loses it and cannot renew a lease another coordinator has since taken.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Client, RedisError, Script};
use serde::{de::DeserializeOwned, Serialize};

use super::protocol::{ModelCard, PoolView};
use crate::bus::redis::connection_manager;

const LEADER: &str = "sn:v2:coordinator:leader";
const POOL: &str = "sn:v2:pool";

fn card_key(model: &str) -> String {
    format!("sn:v2:card:{model}")
}

/// Extends the lease only if this node still holds it.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("a corrupt `{key}` record: {reason}")]
    Corrupt { key: String, reason: String },
}

#[derive(Clone)]
pub struct ClusterState {
    conn: ConnectionManager,
}

fn codec() -> bincode::config::Configuration {
    bincode::config::standard()
}

impl ClusterState {
    pub async fn connect(url: &str) -> Result<Self, StateError> {
        let client = Client::open(url)?;
        Ok(Self {
            conn: connection_manager(&client).await?,
        })
    }

    /// Takes the leader lease for `node`, or keeps it if `node` holds it; true if `node`
    /// leads for the next `ttl`.
    pub async fn lead(&self, node: &str, ttl: Duration) -> Result<bool, StateError> {
        let mut c = self.conn.clone();
        let ms = ttl.as_millis() as u64;
        let renewed: i64 = Script::new(RENEW)
            .key(LEADER)
            .arg(node)
            .arg(ms)
            .invoke_async(&mut c)
            .await?;
        if renewed == 1 {
            return Ok(true);
        }
        let taken: Option<String> = redis::cmd("SET")
            .arg(LEADER)
            .arg(node)
            .arg("NX")
            .arg("PX")
            .arg(ms)
            .query_async(&mut c)
            .await?;
        Ok(taken.is_some())
    }

    pub async fn put_pool(&self, view: &PoolView, ttl: Duration) -> Result<(), StateError> {
        self.put(POOL, view, Some(ttl)).await
    }

    pub async fn pool(&self) -> Result<Option<PoolView>, StateError> {
        self.get(POOL).await
    }

    pub async fn put_card(&self, card: &ModelCard) -> Result<(), StateError> {
        self.put(&card_key(&card.model_id), card, None).await
    }

    pub async fn card(&self, model: &str) -> Result<Option<ModelCard>, StateError> {
        self.get(&card_key(model)).await
    }

    async fn put<T: Serialize>(
        &self,
        key: &str,
        v: &T,
        ttl: Option<Duration>,
    ) -> Result<(), StateError> {
        let bytes = bincode::serde::encode_to_vec(v, codec()).map_err(|e| StateError::Corrupt {
            key: key.into(),
            reason: e.to_string(),
        })?;
        let mut c = self.conn.clone();
        match ttl {
            Some(t) => {
                c.pset_ex::<_, _, ()>(key, bytes, t.as_millis() as u64)
                    .await?
            }
            None => c.set::<_, _, ()>(key, bytes).await?,
        }
        Ok(())
    }

    async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StateError> {
        let mut c = self.conn.clone();
        let bytes: Option<Vec<u8>> = c.get(key).await?;
        bytes
            .map(|b| {
                bincode::serde::decode_from_slice(&b, codec())
                    .map(|(v, _)| v)
                    .map_err(|e| StateError::Corrupt {
                        key: key.into(),
                        reason: e.to_string(),
                    })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_carry_the_protocol_version() {
        let version = format!("sn:v{}:", crate::bus::PROTOCOL_VERSION);
        assert!([super::LEADER, super::POOL, &super::card_key("m")]
            .iter()
            .all(|k| k.starts_with(&version)));
    }
}
