//! Who leads, and where the pool view goes: the one thing the two modes do differently.
//! In `supernet serve` the one coordinator always leads and its front reads its own
//! workers ([`Sole`]); in a cluster a Redis lease elects one leader among any number of
//! coordinators, and the leader publishes the pool view for fronts
//! ([`crate::cluster::state::ClusterState`]).

use std::future::Future;
use std::pin::Pin;

use crate::protocol::PoolView;

pub type LeadFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

pub trait Lead: Send + Sync + 'static {
    /// Takes or keeps the leadership for this coordinator `node`; true while it leads.
    fn lead<'a>(&'a self, node: &'a str) -> LeadFuture<'a, bool>;

    /// Publishes the leader's view of the pool for the fronts.
    fn publish(&self, view: PoolView) -> LeadFuture<'_, ()>;
}

/// The coordinator of `supernet serve`: the only one, so it always leads, and its front
/// asks its workers directly, so there is nothing to publish.
pub struct Sole;

impl Lead for Sole {
    fn lead<'a>(&'a self, _: &'a str) -> LeadFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(true)))
    }

    fn publish(&self, _: PoolView) -> LeadFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
}
