//! OpenAI's wire format, and only here: request validation ([`chat_request`], with function
//! tools and structured output in [`tools`]), response shapes and SSE framing
//! ([`chat_response`]), the error envelope ([`error`]), and the bounds on
//! request schemas ([`schema_limits`]). [`hosted_request`] reads the Sogni fields of a chat
//! request (hosted tools, their execution, inline media references); [`image_part`] reads
//! inline images.

pub mod chat_request;
pub mod chat_response;
pub mod error;
pub mod hosted_request;
pub mod image_part;
pub mod schema_limits;
pub mod tools;
