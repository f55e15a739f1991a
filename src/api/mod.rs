//! OpenAI's wire format, and only here: request validation ([`chat_request`], with function
//! tools and structured output in [`tools`]), response shapes and SSE framing
//! ([`chat_response`]), and the error envelope ([`error`]).

pub mod chat_request;
pub mod chat_response;
pub mod error;
pub mod tools;
