//! Cluster mode: the same actors as `supernet serve`, as separate processes joined by Redis.
//!
//! - [`worker_node`]: `supernet worker`, one model's engine; registers, heartbeats, drains.
//! - [`coordinator`]: `supernet coordinator`; one leader (a Redis lease) places jobs, queues
//!   them when the pool is full, declares silent workers dead and moves their jobs.
//! - [`front_view`]: what a `supernet front` knows of the pool: live workers and the model
//!   cards it renders prompts with.
//! - [`state`]: the Redis keys beside the bus streams (lease, pool view, model cards).
//! - [`protocol`]: the messages only the cluster sends.
//!
//! ARCHITECTURE.md has the sequence of a placement and of a failover.

pub mod coordinator;
pub mod front_view;
pub mod protocol;
pub mod state;
pub mod worker_node;
