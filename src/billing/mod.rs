//! Billing: exact amounts and prices. (The BillingAccountActor, which places holds before
//! dispatch and settles after, comes with the service.)

pub mod amount;
