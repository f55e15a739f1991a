//! Billing: exact amounts ([`amount`]) and what tokens cost ([`pricing`]). (The BillingAccountActor, which places holds before
//! dispatch and settles after, comes with the service.)

pub mod amount;
pub mod pricing;
