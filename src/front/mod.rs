//! The FrontActor: the actix-web app that speaks OpenAI's HTTP API. It authenticates,
//! validates and writes responses; each chat request's work is a SessionActor's, and the
//! front reaches models only through actors. [`chat`] is the chat route, [`creative`] the
//! Sogni-native routes of hosted tools and media, [`runs`] and [`run_events`] the durable
//! chat runs, [`workflows`] and [`workflow_events`] the creative workflows and [`templates`]
//! their saved recipes,
//! [`uploads`] presigned media uploads, [`routes`] the others, [`http`] what they share.

pub mod chat;
pub mod creative;
pub mod http;
pub mod routes;
pub mod run_events;
pub mod runs;
pub mod templates;
pub mod uploads;
pub mod workflow_events;
pub mod workflows;

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context;

use crate::admin::{Handoff, ENDPOINT};
use crate::session::Services;

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
    .service(
        web::resource("/v1/account/me")
            .route(web::get().to(creative::account_me))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/chat/runs")
            .route(web::post().to(runs::create))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/chat/runs/{id}")
            .route(web::get().to(runs::get))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/chat/runs/{id}/events")
            .route(web::get().to(runs::events))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/chat/runs/{id}/events/stream")
            .route(web::get().to(run_events::stream))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/chat/runs/{id}/cancel")
            .route(web::post().to(runs::cancel))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/chat/runs/{id}/confirm-cost")
            .route(web::post().to(runs::confirm_cost))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/creative-agent/workflows/templates")
            .route(web::get().to(templates::list))
            .route(web::post().to(templates::create))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/creative-agent/workflows/templates/{id}")
            .route(web::get().to(templates::get))
            .route(web::patch().to(templates::patch))
            .route(web::delete().to(templates::delete))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/creative-agent/workflows/templates/{id}/fork")
            .route(web::post().to(templates::fork))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/creative-agent/workflows")
            .route(web::post().to(workflows::create))
            .route(web::get().to(workflows::list))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/creative-agent/workflows/{id}")
            .route(web::get().to(workflows::get))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/creative-agent/workflows/{id}/events")
            .route(web::get().to(workflow_events::events))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/creative-agent/workflows/{id}/events/stream")
            .route(web::get().to(workflow_events::stream))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/creative-agent/workflows/{id}/cancel")
            .route(web::post().to(workflows::cancel))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/creative-agent/workflows/{id}/resume")
            .route(web::post().to(workflows::resume))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/creative-agent/workflows/{id}/confirm-cost")
            .route(web::post().to(workflows::confirm_cost))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/creative-agent/workflows/{id}/reseed")
            .route(web::post().to(workflows::reseed))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/creative-agent/tools")
            .route(web::get().to(creative::list_tools))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/creative-agent/tools/execute")
            .route(web::post().to(creative::execute_tool))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v2/image/uploadUrl")
            .route(web::get().to(uploads::image_upload_url))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v2/media/uploadUrl")
            .route(web::get().to(uploads::media_upload_url))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/image/uploadUrl")
            .route(web::get().to(uploads::image_put_url))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/media/uploadUrl")
            .route(web::get().to(uploads::media_put_url))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource(["/v1/image/downloadUrl", "/v2/image/downloadUrl"])
            .route(web::get().to(uploads::image_download_url))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource(["/v1/media/downloadUrl", "/v2/media/downloadUrl"])
            .route(web::get().to(uploads::media_download_url))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v2/uploads")
            .route(web::post().to(uploads::post))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/uploads")
            .route(web::put().to(uploads::put))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/v1/media/{id}")
            .route(web::get().to(creative::media))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .route("/healthz", web::get().to(routes::healthz))
    .route("/readyz", web::get().to(routes::readyz))
    .route("/metrics", web::get().to(routes::metrics))
    .route(ENDPOINT, web::post().to(routes::admin))
    .default_service(web::to(routes::not_found));
}

/// Binds the API on the config's host and port with its HTTP threads; `supernet serve`
/// and `supernet front` start the same server. Returns it (not yet running) and the
/// address it bound; the caller logs `listening on` once it is ready for clients.
pub fn bind(state: FrontState) -> anyhow::Result<(Server, SocketAddr)> {
    let server = &state.services.config.server;
    let (host, port, threads) = (server.host.clone(), server.port, server.http_threads());
    let state = web::Data::new(state);
    crate::telemetry::metrics::front();
    // Streamed tokens are small writes that must leave at once, not wait on Nagle's timer.
    let server = HttpServer::new(move || App::new().app_data(state.clone()).configure(configure))
        .tcp_nodelay(true)
        // A client that closes its connection is gone: its request stops at once (the
        // handler is dropped, which cancels the job), streaming or not.
        .h1_allow_half_closed(false)
        .workers(threads)
        .bind((host.as_str(), port))
        .with_context(|| format!("binding {host}:{port}"))?;
    let bound = *server
        .addrs()
        .first()
        .context("the server bound no address")?;
    Ok((server.run(), bound))
}
