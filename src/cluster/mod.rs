//! Cluster mode's Redis side: what `supernet serve` does not need. The roles themselves
//! (`supernet front`, `coordinator`, `worker`) are the same actors as `serve`'s, started by
//! [`crate::cli`] on the Redis bus and store.
//!
//! - [`state`]: the Redis keys beside the bus streams (the leader lease, the pool view,
//!   model cards), and the lease as the coordinator's [`Lead`](crate::coordinator::lead::Lead).
//! - [`front_view`]: what a `supernet front` knows of the pool: live workers and the model
//!   cards it renders prompts with.
//!
//! ARCHITECTURE.md has the sequence of a placement and of a failover.

pub mod front_view;
pub mod state;
