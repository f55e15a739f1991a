//! The cluster's Redis keys beside the bus streams (see [`crate::bus::redis`]). Like the streams
//! they carry the protocol version, since they hold its messages (bincode).
//!
//! | key | written by | value |
//! |---|---|---|
//! | `sn:v3:coordinator:leader` | the leader (`SET NX PX`, renewed) | the leader's node id |
//! | `sn:v3:pool` | the leader, every tick (expires) | [`PoolView`] (bincode) |
//! | `sn:v3:card:{model}` | each worker at start | [`ModelCard`] (bincode) |
//!
//! [`Leased`] is the cluster's [`Lead`]: the lease elects the leader, which publishes the
//! pool view here.
//!
//! The lease is what makes one coordinator the leader: it is taken with `SET NX PX` and
//! renewed by a script that extends it only for its holder, so a leader that stalls past
//! the lease loses it and cannot renew a lease another coordinator has since taken.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Client, RedisError, Script};
use serde::{de::DeserializeOwned, Serialize};

use crate::bus::redis::connection_manager;
use crate::coordinator::lead::{Lead, LeadFuture};
use crate::protocol::{streams, ModelCard, PoolView};

fn leader_key() -> String {
    streams::key("coordinator:leader")
}

fn pool_key() -> String {
    streams::key("pool")
}

fn card_key(model: &str) -> String {
    streams::key(&format!("card:{model}"))
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
            .key(leader_key())
            .arg(node)
            .arg(ms)
            .invoke_async(&mut c)
            .await?;
        if renewed == 1 {
            return Ok(true);
        }
        let taken: Option<String> = redis::cmd("SET")
            .arg(leader_key())
            .arg(node)
            .arg("NX")
            .arg("PX")
            .arg(ms)
            .query_async(&mut c)
            .await?;
        Ok(taken.is_some())
    }

    pub async fn put_pool(&self, view: &PoolView, ttl: Duration) -> Result<(), StateError> {
        self.put(&pool_key(), view, Some(ttl)).await
    }

    pub async fn pool(&self) -> Result<Option<PoolView>, StateError> {
        self.get(&pool_key()).await
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

/// The cluster's leadership: a Redis lease of `ttl`, and the pool view published with the
/// same expiry (a view nobody renews is gone with its leader).
pub struct Leased {
    pub state: ClusterState,
    pub ttl: Duration,
}

impl Lead for Leased {
    fn lead<'a>(&'a self, node: &'a str) -> LeadFuture<'a, bool> {
        Box::pin(async move {
            self.state
                .lead(node, self.ttl)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn publish(&self, view: PoolView) -> LeadFuture<'_, ()> {
        Box::pin(async move {
            self.state
                .put_pool(&view, self.ttl)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_carry_the_protocol_version() {
        let version = format!("sn:v{}:", crate::protocol::VERSION);
        assert!(
            [super::leader_key(), super::pool_key(), super::card_key("m")]
                .iter()
                .all(|k| k.starts_with(&version))
        );
    }
}
