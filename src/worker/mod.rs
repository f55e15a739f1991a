//! The worker: owns the engine and runs jobs. [`engine_thread`] keeps the engine on a
//! dedicated OS thread; [`actor`] is the WorkerActor, which takes jobs from its bus inbox,
//! streams their events back and heartbeats its load ([`membership`]: the inbox and the
//! heartbeats, shared with the media worker); [`simulator`] stands in for the
//! engine when the control plane is load-tested. What it says on the bus is in
//! [`crate::protocol`].

pub mod actor;
pub mod engine_thread;
pub mod membership;
pub mod simulator;
