//! OpenAI's wire format, and only here: request validation ([`chat_request`]), response
//! shapes and SSE framing ([`chat_response`]), and the error envelope ([`error`]).

pub mod chat_request;
pub mod chat_response;
pub mod error;
