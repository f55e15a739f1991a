//! Durable chat runs (`/v1/chat/runs`, contract §3): a chat turn with its hosted tool rounds
//! that outlives any one HTTP connection and any one front. A run is its event log
//! ([`log`]); its snapshot is a fold over that log ([`state`]).

pub mod event;
pub mod log;
