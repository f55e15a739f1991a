//! supernet: an OpenAI-compatible LLM and agent API served by a pool of GPU workers.
//!
//! This crate holds the whole system; see ARCHITECTURE.md for the map. What is built so far
//! is the inference engine ([`engine`]) and the commands that drive it ([`cli`]).

pub mod cli;
pub mod engine;
