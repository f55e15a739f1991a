//! The small HTTP server of the roles that have no API (`supernet coordinator`, `supernet
//! worker`): `/metrics` for Prometheus and `/healthz` for Kubernetes probes, on
//! `--metrics-addr`. Fronts serve both on their API port.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;

/// Writes the role's state-at-scrape metrics (see [`super::snapshot`]).
pub type Snapshot = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = String>>> + Send + Sync>;

/// The text format's content type.
pub const CONTENT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The process's registry and then `snapshot`, as one response.
pub fn response(mut snapshot: String) -> HttpResponse {
    super::metrics::encode(&mut snapshot);
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, CONTENT))
        .body(snapshot)
}

/// Serves `/metrics` and `/healthz` on `addr` until the process ends; returns the bound
/// address (port 0 picks a free one) and logs it.
pub fn start(addr: &str, snapshot: Snapshot) -> anyhow::Result<SocketAddr> {
    let server = HttpServer::new(move || {
        let snapshot = Arc::clone(&snapshot);
        App::new()
            .route(
                "/metrics",
                web::get().to(move || {
                    let s = snapshot();
                    async move { response(s.await) }
                }),
            )
            .route(
                "/healthz",
                web::get().to(|| async {
                    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
                }),
            )
    })
    .workers(1)
    .disable_signals()
    .bind(addr)
    .with_context(|| format!("serving metrics on {addr} (choose another with --metrics-addr)"))?;
    let bound = server
        .addrs()
        .first()
        .copied()
        .context("the metrics server bound no address")?;
    actix::spawn(async move {
        if let Err(e) = server.run().await {
            tracing::error!("the metrics server stopped: {e}");
        }
    });
    tracing::info!("metrics on http://{bound}/metrics");
    Ok(bound)
}
