//! OpenAI's wire format, and only here: request validation ([`chat_request`]) and the
//! error envelope ([`error`]). Response shapes and SSE framing join them with the service.

pub mod chat_request;
pub mod error;
