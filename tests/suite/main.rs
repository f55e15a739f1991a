//! The Rust integration tests, as one test crate: each module was once a crate of its own,
//! and each crate is a binary that links the whole program (thin LTO, one codegen unit, as
//! the release build), which cost about four minutes of a two-core CI machine per binary.
//! One binary links once. Run one module with its path as the filter:
//! `cargo test --release --test suite vision::`.

mod common;

mod admin_cli;
mod batch;
mod billing_accounts;
mod budget_endings;
mod chat_template;
mod coordinator;
mod cuda;
mod dequant_reference;
mod engine_thread;
mod openai_schemas;
mod session_prompt;
mod smollm2_greedy;
mod structured_output;
mod tiny_models;
mod tokenizer;
mod vision;
