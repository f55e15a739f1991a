//! The session: one request's turn. [`prompt`] turns a validated request into prompt ids
//! and clamped sampling; [`actor`] is the SessionActor that drives billing, placement and
//! streaming; [`inbox`] routes workers' answers to sessions; [`models`] is what this node
//! knows of the models it serves; [`pool`] is where it finds workers (in its own process,
//! or a cluster's).

pub mod actor;
pub mod inbox;
pub mod markup;
pub mod models;
pub mod pool;
pub mod prompt;
