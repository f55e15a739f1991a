//! The worker: owns the engine and runs jobs. [`engine_thread`] keeps the engine on a
//! dedicated OS thread; the WorkerActor that takes jobs from the bus comes with the service.

pub mod engine_thread;
