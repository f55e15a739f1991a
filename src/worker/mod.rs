//! The worker: owns the engine and runs jobs. [`engine_thread`] keeps the engine on a
//! dedicated OS thread; [`actor`] is the WorkerActor the coordinator places jobs on.

pub mod actor;
pub mod engine_thread;
