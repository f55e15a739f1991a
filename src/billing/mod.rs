//! Billing: exact amounts ([`amount`]), what tokens cost ([`pricing`]), and the
//! BillingAccountActor that holds before dispatch and settles after ([`account_actor`]).

pub mod account_actor;
pub mod amount;
pub mod pricing;
