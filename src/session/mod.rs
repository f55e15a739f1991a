//! The session: one request's turn. [`prompt`] turns a validated request into the prompt
//! ids and generation parameters a worker runs; the SessionActor that drives billing,
//! placement and streaming comes with the service.

pub mod prompt;
