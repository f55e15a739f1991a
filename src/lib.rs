//! supernet: an OpenAI-compatible LLM and agent API served by a pool of GPU workers.
//!
//! This crate holds the whole system; see ARCHITECTURE.md for the map. What is built so far
//! is the inference engine ([`engine`]), the commands that drive it ([`cli`]), and the
//! service of `supernet serve`: the HTTP [`front`], per-request [`session`]s, [`billing`]
//! over the durable [`store`], the [`coordinator`] and the [`worker`]s, joined by the
//! [`bus`], which carries the messages of the [`protocol`].

pub mod admin;
pub mod api;
pub mod billing;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod engine;
pub mod front;
pub mod ids;
pub mod locks;
pub mod media;
pub mod money;
pub mod protocol;
pub mod runs;
pub mod session;
pub mod store;
pub mod telemetry;
#[cfg(test)]
mod test_redis;
pub mod tools;
pub mod worker;
pub mod workflows;
