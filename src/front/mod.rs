//! The FrontActor: the actix-web app that speaks OpenAI's HTTP API. It authenticates,
//! validates and writes responses; each chat request's work is a SessionActor's, and the
//! front reaches models only through actors. [`chat`] is the chat route, [`routes`] the
//! others, [`http`] what they share.

pub mod chat;
pub mod http;
pub mod routes;

use std::sync::Arc;

use actix_web::web;

use crate::admin::{Handoff, ENDPOINT};
use crate::session::actor::Services;

/// What every request handler of this node shares.
pub struct FrontState {
    pub services: Arc<Services>,
    /// The token of the admin endpoint: `supernet serve`'s handoff token, or a cluster
    /// front's `--admin-key`.
    pub admin: Option<Handoff>,
}

/// The routes, for `App::configure`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/chat/completions")
            .route(web::post().to(chat::chat_completions))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/models")
            .route(web::get().to(routes::list_models))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/models/{id:.+}")
            .route(web::get().to(routes::get_model))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .route("/healthz", web::get().to(routes::healthz))
    .route("/readyz", web::get().to(routes::readyz))
    .route("/metrics", web::get().to(routes::metrics))
    .route(ENDPOINT, web::post().to(routes::admin))
    .default_service(web::to(routes::not_found));
}
