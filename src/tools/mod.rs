//! Hosted tools: the server-side tool loop of `/v1/chat/completions`. [`catalog`] is the
//! tool definitions and the modes that select them; [`tool_loop`] runs a request's rounds;
//! [`call`] makes a model's media call ready (arguments checked, media resolved through
//! the request's [`media_context`]); [`executor`] runs one media call on a media worker,
//! billed; [`results`] is what calls produce, in the shapes clients read.

pub mod call;
pub mod catalog;
pub mod composition;
pub mod executor;
pub mod media_context;
pub mod results;
pub mod tool_loop;
