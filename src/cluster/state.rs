//! The cluster's Redis keys beside the bus streams (see [`crate::bus::redis`]). Like the
//! streams they carry the protocol version, since they hold its messages.
//!
//! | key | written by | value |
//! |---|---|---|
//! | `sn:v4:coordinator:leader` | the leader (a lease: `SET NX PX`, renewed) | the leader's node id |
//! | `sn:v4:pool` | the leader, every tick (expires) | [`PoolView`] |
//! | `sn:v4:card:{model}` | each worker at start | [`ModelCard`] |
//!
//! [`Leased`] is the cluster's [`Lead`]: the lease elects the leader, which publishes the
//! pool view here.

use std::time::Duration;

use redis::RedisError;
use serde::{de::DeserializeOwned, Serialize};

use crate::bus::keys::RedisKeys;
use crate::bus::{decode, encode, BusError};
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

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("a corrupt `{key}` record: {reason}")]
    Corrupt { key: String, reason: String },
}

#[derive(Clone)]
pub struct ClusterState {
    keys: RedisKeys,
}

impl ClusterState {
    pub async fn connect(url: &str) -> Result<Self, StateError> {
        Ok(Self {
            keys: RedisKeys::connect(url).await?,
        })
    }

    /// Takes the leader lease for `node`, or keeps it if `node` holds it; true if `node`
    /// leads for the next `ttl`.
    pub async fn lead(&self, node: &str, ttl: Duration) -> Result<bool, StateError> {
        Ok(self.keys.lease(&leader_key(), node, ttl).await?)
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
        let bytes = encode(key, v).map_err(|e| corrupt(key, e))?;
        Ok(self.keys.put(key, bytes, ttl).await?)
    }

    async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StateError> {
        self.keys
            .get(key)
            .await?
            .map(|b| decode(&b).map_err(|e| corrupt(key, e)))
            .transpose()
    }
}

fn corrupt(key: &str, e: BusError) -> StateError {
    StateError::Corrupt {
        key: key.into(),
        reason: e.to_string(),
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
