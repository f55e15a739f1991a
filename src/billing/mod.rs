//! Money: exact [`amount`]s, model [`pricing`], per-key request [`limits`], and the
//! per-account actors that hold and settle jobs ([`account_actor`]).

pub mod account_actor;
pub mod amount;
pub mod limits;
pub mod pricing;
