//! Billing: model [`pricing`] in exact [`crate::money`], per-key request [`limits`], and each
//! account's billing, which holds and settles jobs ([`accounts`]), whose store calls run
//! one at a time through a [`store_queue`].

pub mod accounts;
pub mod limits;
pub mod pricing;
pub mod store_queue;
