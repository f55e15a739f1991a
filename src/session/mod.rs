//! The session: one request's turn. [`prompt`] turns a validated request into prompt ids
//! and clamped sampling, with the tools written into the conversation ([`tool_prompt`]) and
//! the output's grammar ([`grammar`]); [`markup`] splits the output into content, reasoning
//! and tool calls; [`actor`] is the SessionActor that drives billing, placement and
//! streaming; [`inbox`] routes workers' answers to sessions; [`models`] is what this node
//! knows of the models it serves; [`pool`] is where it finds workers (in its own process,
//! or a cluster's); [`prepare_pool`] runs the parsing and preparing off the HTTP threads.

pub mod actor;
pub mod grammar;
pub mod inbox;
pub mod markup;
pub mod models;
pub mod pool;
pub mod prepare_pool;
pub mod prompt;
pub mod tool_prompt;
