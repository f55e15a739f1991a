//! The small routes: the model list, health and readiness, metrics, the admin
//! endpoint of [`crate::admin`], and the envelope for routes that do not exist.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::http::{api_key, error_response, json_body};
use super::FrontState;
use crate::admin::{execute, AdminCommand, WorkersCommand};
use crate::api::chat_response::{model_list, Capabilities, ModelObject, Pricing};
use crate::api::error::ApiError;
use crate::protocol::{WorkerInfo, WorkerLoad};
use crate::session::models::ModelEntry;
use crate::telemetry::{metrics_http, snapshot};

/// Every live worker with its load.
async fn worker_loads(state: &FrontState) -> Vec<(WorkerInfo, WorkerLoad)> {
    state.services.roster.workers().await
}

fn model_object(m: &ModelEntry, workers: &[(WorkerInfo, WorkerLoad)]) -> ModelObject {
    ModelObject {
        id: m.id.clone(),
        created: m.created,
        owned_by: "supernet".into(),
        context_length: m.context_length,
        // Every model calls tools: the template renders them, or the session describes them.
        capabilities: Capabilities {
            tools: true,
            vision: m.vision.is_some(),
            reasoning: m.template.handles_thinking,
        },
        pricing: Pricing {
            input: m.tier.input_usd_per_m.to_string(),
            output: m.tier.output_usd_per_m.to_string(),
        },
        workers: workers
            .iter()
            .filter(|(i, l)| i.model_id == m.id && !l.draining)
            .count(),
    }
}

pub async fn list_models(state: web::Data<FrontState>) -> HttpResponse {
    let workers = worker_loads(&state).await;
    let cards: Vec<_> = state
        .services
        .models
        .list()
        .iter()
        .map(|m| model_object(m, &workers))
        .collect();
    HttpResponse::Ok().json(model_list(&cards))
}

pub async fn get_model(id: web::Path<String>, state: web::Data<FrontState>) -> HttpResponse {
    match state.services.models.get(&id) {
        Some(m) => HttpResponse::Ok().json(model_object(&m, &worker_loads(&state).await).json()),
        None => error_response(&ApiError::model_not_found(&id)),
    }
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready when a worker is loaded and serving (not drained).
pub async fn readyz(state: web::Data<FrontState>) -> HttpResponse {
    let serving = worker_loads(&state)
        .await
        .iter()
        .filter(|(_, l)| !l.draining)
        .count();
    if serving == 0 {
        return error_response(&ApiError::unavailable("No worker is serving"));
    }
    HttpResponse::Ok().json(json!({ "status": "ready", "workers": serving }))
}

/// Prometheus text: this front's requests (and, in `supernet serve`, its coordinator's and
/// workers'), then the pool as this node sees it.
pub async fn metrics(state: web::Data<FrontState>) -> HttpResponse {
    let workers = worker_loads(&state).await;
    let mut out = String::new();
    snapshot::pool(&mut out, &workers);
    if state.services.roster.local() {
        snapshot::workers(&mut out, &workers);
    }
    metrics_http::response(out)
}

/// `supernet admin` while this server holds the store.
pub async fn admin(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<FrontState>,
) -> HttpResponse {
    if !api_key(&req)
        .is_ok_and(|presented| state.admin.as_ref().is_some_and(|h| h.accepts(&presented)))
    {
        return error_response(&ApiError::unauthorized("Not an admin token of this server"));
    }
    let command: AdminCommand = match json_body(&req, payload, 1 << 20).await.and_then(|v| {
        serde_json::from_value(v)
            .map_err(|e| ApiError::bad_body(format!("not an admin command: {e}")))
    }) {
        Ok(c) => c,
        Err(e) => return error_response(&e),
    };
    if let AdminCommand::Workers(w) = command {
        return match workers_command(&state, w).await {
            Ok(v) => HttpResponse::Ok().json(v),
            Err(e) => error_response(&e),
        };
    }
    let store = std::sync::Arc::clone(state.services.billing.store());
    match web::block(move || execute(store.as_ref(), command)).await {
        Ok(Ok(v)) => HttpResponse::Ok().json(v),
        Ok(Err(e)) => error_response(&ApiError::bad_body(format!("{e:#}"))),
        Err(e) => error_response(&ApiError::logged("an admin command", e)),
    }
}

async fn workers_command(
    state: &FrontState,
    command: WorkersCommand,
) -> Result<serde_json::Value, ApiError> {
    let (worker_id, drain) = match command {
        WorkersCommand::List => {
            let list: Vec<_> = worker_loads(state)
                .await
                .into_iter()
                .map(|(i, l)| json!({ "worker_id": i.worker_id, "model": i.model_id, "draining": l.draining, "queued": l.queued, "running": l.running, "completed": l.completed, "cancelled": l.cancelled }))
                .collect();
            return Ok(json!({ "workers": list }));
        }
        WorkersCommand::Drain { worker_id } => (worker_id, true),
        WorkersCommand::Resume { worker_id } => (worker_id, false),
    };
    state
        .services
        .roster
        .set_draining(&worker_id, drain)
        .await?;
    Ok(json!({ "worker_id": worker_id, "draining": drain }))
}

pub async fn not_found(req: HttpRequest) -> HttpResponse {
    error_response(&ApiError::not_found(format!(
        "Unknown route: {} {}",
        req.method(),
        req.path()
    )))
}

pub async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let e = ApiError {
        status: 405,
        ..ApiError::not_found(format!("{} is not allowed on {}", req.method(), req.path()))
    };
    error_response(&ApiError {
        code: Some("method_not_allowed"),
        ..e
    })
}
