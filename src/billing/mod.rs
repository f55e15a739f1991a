//! Money: exact [`amount`]s, model [`pricing`], per-key request [`limits`], and the
//! per-account actors that hold and settle jobs ([`account_actor`]), whose store calls run
//! one at a time through a [`store_queue`].

pub mod account_actor;
pub mod amount;
pub mod limits;
pub mod pricing;
pub mod store_queue;
