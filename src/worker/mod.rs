//! The worker: owns the engine and runs jobs. [`engine_thread`] keeps the engine on a
//! dedicated OS thread; [`actor`] is the WorkerActor, which takes jobs from its bus inbox
//! and streams their events back; [`protocol`] is what it says on the bus; [`simulator`]
//! stands in for the engine when the control plane is load-tested.

pub mod actor;
pub mod engine_thread;
pub mod protocol;
pub mod simulator;
