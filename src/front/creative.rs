//! The Sogni-native routes of hosted tools, in Sogni's envelope (`{status:"success",
//! data}` or `{status:"error", message, errorCode}`): the account (`GET /v1/account/me`,
//! which both Sogni SDKs call right after authenticating), the hosted tool list, the
//! direct execution of composition tools, and the signed media downloads.

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::http::{api_key, count_error, error_response, json_body};
use super::FrontState;
use crate::api::chat_request::ChatRequest;
use crate::api::error::ApiError;
use crate::billing::accounts::Presented;
use crate::media::signing::{query_signature, SignatureError};
use crate::session::actor::Turn;
use crate::tools::catalog::{catalog, Kind, Mode};
use crate::tools::composition;

/// Largest `/tools/execute` body.
const MAX_EXECUTE_BODY: usize = 1 << 20;

pub(super) fn sogni_error(e: &ApiError) -> HttpResponse {
    count_error(e);
    let mut r = HttpResponse::build(
        actix_web::http::StatusCode::from_u16(e.status)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
    );
    if let Some(s) = e.retry_after {
        r.insert_header(("Retry-After", s.to_string()));
    }
    r.json(e.sogni_envelope())
}

pub(super) fn success(data: Value) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "success", "data": data }))
}

pub(super) async fn authenticated(
    req: &HttpRequest,
    state: &FrontState,
) -> Result<Presented, ApiError> {
    let secret = api_key(req)?;
    state
        .services
        .billing
        .authenticate(secret)
        .await
        .map_err(|e| ApiError::logged("authenticating", e))?
        .ok_or_else(|| ApiError::unauthorized("Incorrect API key provided"))
}

/// `GET /v1/account/me`.
pub async fn account_me(req: HttpRequest, state: web::Data<FrontState>) -> HttpResponse {
    let key = match authenticated(&req, &state).await {
        Ok(k) => k,
        Err(e) => return sogni_error(&e),
    };
    let store = Arc::clone(state.services.billing.store());
    let id = key.record.account_id.clone();
    let account = match web::block(move || store.account(&id)).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return sogni_error(&ApiError::logged("reading the account", e)),
        Err(e) => return sogni_error(&ApiError::logged("reading the account", e)),
    };
    success(json!({
        "accountId": account.id,
        "username": account.name,
        "currentEmail": null,
        "walletAddress": null,
        "balance": {
            "spark": account.balances.spark.to_string(),
            "sogni": account.balances.sogni.to_string(),
        },
    }))
}

/// `GET /v1/creative-agent/tools`: every hosted tool, its mode and whether it can run now.
pub async fn list_tools(state: web::Data<FrontState>) -> HttpResponse {
    let pipelines = state.services.media_pipelines().await;
    let tools: Vec<Value> = catalog()
        .all()
        .iter()
        .map(|t| {
            let modes: Vec<&str> = [
                (Mode::CreativeTools, "creative-tools"),
                (Mode::CreativeAgent, "creative-agent"),
            ]
            .iter()
            .filter(|(m, _)| catalog().of_mode(*m).any(|d| d.name == t.name))
            .map(|(_, n)| *n)
            .collect();
            json!({
                "name": t.name,
                "description": t.description,
                "kind": if t.kind == Kind::Media { "media" } else { "composition" },
                "modes": modes,
                "available": t.available(&pipelines),
                "parameters": t.parameters,
            })
        })
        .collect();
    success(json!({ "tools": tools, "pipelines": pipelines }))
}

/// `POST /v1/creative-agent/tools/execute`: `{tool, arguments}` of a composition tool.
pub async fn execute_tool(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<FrontState>,
) -> HttpResponse {
    match execute(req, payload, state).await {
        Ok(r) => r,
        Err(e) => sogni_error(&e),
    }
}

async fn execute(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<FrontState>,
) -> Result<HttpResponse, ApiError> {
    let key = authenticated(&req, &state).await?;
    let body = json_body(&req, payload, MAX_EXECUTE_BODY).await?;
    let tool = body["tool"]
        .as_str()
        .ok_or_else(|| ApiError::invalid("tool", "`tool` is required"))?;
    let def = catalog()
        .get(tool)
        .filter(|d| d.kind == Kind::Composition)
        .ok_or_else(|| {
            let names: Vec<&str> = catalog()
                .all()
                .iter()
                .filter(|d| d.kind == Kind::Composition)
                .map(|d| d.name.as_str())
                .collect();
            ApiError::invalid(
                "tool",
                format!(
                    "`{tool}` is not a composition tool; these run here: {}",
                    names.join(", ")
                ),
            )
        })?;
    let arguments = match body.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(a @ Value::Object(_)) => a.clone(),
        Some(Value::String(s)) => serde_json::from_str(s)
            .map_err(|_| ApiError::invalid("arguments", "`arguments` must be a JSON object"))?,
        Some(_) => {
            return Err(ApiError::invalid(
                "arguments",
                "`arguments` must be a JSON object",
            ))
        }
    };
    if let Some(args) = arguments.as_object() {
        def.check_names(args)
            .map_err(|m| ApiError::invalid("arguments", m))?;
    }
    let s = &state.services;
    let model = s
        .models
        .default_model()
        .ok_or_else(|| ApiError::unavailable("This server serves no model"))?;
    let permit = s
        .billing
        .admit(&key.record, s.config.limits)
        .map_err(|l| ApiError::rate_limited(l.message, l.retry_after_secs))?;
    let call = format!(
        "call_{}",
        crate::ids::random_hex(12).map_err(|e| ApiError::logged("an id", e))?
    );
    let turn = Turn {
        job_id: format!("tool-{}", &call[5..]),
        key,
        model,
        request: ChatRequest::parse(&json!({"messages": [{"role": "user", "content": ""}]}))?,
        permit: Arc::new(permit),
        bills_prompt: true,
        span: tracing::info_span!("POST /v1/creative-agent/tools/execute", tool),
        arrived: Instant::now(),
    };
    let job_id = turn.job_id.clone();
    let (result, _) = composition::run(s, &turn, def, &arguments.to_string(), job_id)
        .await
        .map_err(|e| {
            let status = if e.error_type == "PARAMETER_INVALID" {
                400
            } else {
                503
            };
            ApiError {
                status,
                ..ApiError::unavailable(format!("{}: {}", e.error_type, e.message))
            }
        })?;
    Ok(success(json!({
        "toolCallId": call,
        "tool": def.name,
        "result": result,
        "message": null,
    })))
}

/// `GET /v1/media/{id}?exp=..&sig=..`: an asset, to whoever holds its signed URL.
pub async fn media(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<FrontState>,
) -> HttpResponse {
    let media = &state.services.media;
    let Some((exp, sig)) = query_signature(req.query_string()) else {
        return error_response(&ApiError::forbidden(
            "This media URL is not signed; use the URL a response gave",
        ));
    };
    let now = crate::clock::unix_secs() as u64;
    match media.signer.verify(&id, exp, &sig, now) {
        Ok(()) => {}
        Err(SignatureError::Expired) => {
            return error_response(&ApiError::forbidden("This media URL has expired"))
        }
        Err(SignatureError::Bad) => {
            return error_response(&ApiError::forbidden(
                "This media URL's signature is not valid",
            ))
        }
    }
    let (meta, bytes) = match (media.assets.meta(&id).await, media.assets.bytes(&id).await) {
        (Ok(Some(m)), Ok(Some(b))) => (m, b),
        (Ok(None), _) | (_, Ok(None)) => {
            return error_response(&ApiError::not_found(format!("No media `{id}`")))
        }
        (Err(e), _) | (_, Err(e)) => return error_response(&ApiError::logged("reading media", e)),
    };
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, meta.mime))
        .insert_header((CACHE_CONTROL, "private, max-age=3600"))
        .body(bytes)
}
