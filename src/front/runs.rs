//! The durable chat run routes (`/v1/chat/runs`, contract §3) in Sogni's envelope: create
//! (which starts executing the run on this front), read, list events, cancel and confirm a
//! cost pause. A run belongs to the account whose key created it; any other key gets 404 on
//! every route, never 403. The event stream is [`super::run_events`].

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::creative::{authenticated, sogni_error, success};
use super::http::json_body;
use super::FrontState;
use crate::api::chat_request::ChatRequest;
use crate::api::error::ApiError;
use crate::billing::accounts::Presented;
use crate::protocol::media::Asset;
use crate::runs::event::RunEvent;
use crate::runs::log::{Created, LogError, RunMeta};
use crate::runs::request::{self, chat_body};
use crate::runs::state::RunState;
use crate::runs::{blocking, executor, Signal};
use crate::session::Services;

/// Largest create or confirm body.
const MAX_BODY: usize = 4 << 20;
/// Longest `Idempotency-Key` taken.
const MAX_IDEMPOTENCY_KEY: usize = 256;
/// How long a cancel waits for the run's executor to end it.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

fn log_error(e: LogError) -> ApiError {
    match e {
        LogError::NoRun(id) => not_found(&id),
        e => ApiError::logged("the run log", e),
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("No chat run `{id}`"))
}

pub(super) fn respond(r: Result<HttpResponse, ApiError>) -> HttpResponse {
    r.unwrap_or_else(|e| sogni_error(&e))
}

/// `Idempotency-Key`, if sent.
pub(super) fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str().map(str::trim) {
        Ok(k) if !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY => Ok(Some(k.to_string())),
        _ => Err(ApiError::invalid(
            "Idempotency-Key",
            format!("`Idempotency-Key` must be 1 to {MAX_IDEMPOTENCY_KEY} visible characters"),
        )),
    }
}

/// The run `id` of `key`'s account, with its state; 404 for a run of another account.
pub(super) async fn load(
    services: &Services,
    key: &Presented,
    id: &str,
) -> Result<(RunMeta, RunState), ApiError> {
    let (log, run) = (Arc::clone(&services.runs.log), id.to_string());
    let (meta, events) = blocking(move || match log.meta(&run)? {
        Some(m) => Ok((Some(m), log.read(&run, None)?)),
        None => Ok((None, Vec::new())),
    })
    .await
    .map_err(log_error)?;
    match meta {
        Some(m) if m.account_id == key.record.account_id && !events.is_empty() => {
            Ok((m, RunState::fold(&events)))
        }
        _ => Err(not_found(id)),
    }
}

/// The snapshot of a run, with its lease.
async fn snapshot(services: &Services, state: &RunState) -> Result<Value, ApiError> {
    let (log, run) = (Arc::clone(&services.runs.log), state.run_id.clone());
    let lease = blocking(move || log.lease(&run)).await.map_err(log_error)?;
    Ok(state.snapshot(lease.as_ref()))
}

/// `POST /v1/chat/runs`.
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<FrontState>,
) -> HttpResponse {
    respond(create_run(&req, payload, &state).await)
}

async fn create_run(
    req: &HttpRequest,
    payload: web::Payload,
    state: &FrontState,
) -> Result<HttpResponse, ApiError> {
    let s = &state.services;
    let key = authenticated(req, state).await?;
    let _permit = s
        .billing
        .admit(&key.record, s.config.limits)
        .map_err(|l| ApiError::rate_limited(l.message, l.retry_after_secs))?;
    let idem = idempotency_key(req)?;
    let body = json_body(req, payload, MAX_BODY).await?;
    let parsed = request::parse(&body, idem.as_deref())?;
    // The rounds' request must be one the chat route takes.
    let chat = chat_body(&parsed.snapshot);
    let pipelines = s.media_pipelines().await;
    let checked = ChatRequest::parse_offering(&chat, &pipelines)?;
    if let Some(m) = &checked.model {
        s.models
            .get(m)
            .ok_or_else(|| ApiError::model_not_found(m))?;
    }
    let account = key.record.account_id.clone();
    let mut uploads: Vec<Asset> = Vec::new();
    for (i, url) in parsed.upload_urls.iter().enumerate() {
        uploads.push(
            request::resolve(&s.media, url, &account, &format!("media_references[{i}]")).await?,
        );
    }
    let mut seeded: Vec<Asset> = Vec::new();
    for (i, url) in parsed.seed_urls.iter().enumerate() {
        seeded
            .push(request::resolve(&s.media, url, &account, &format!("media_context[{i}]")).await?);
    }
    let run_id = format!(
        "run_{}",
        crate::ids::random_hex(16).map_err(|e| ApiError::logged("a run id", e))?
    );
    let r = &parsed.snapshot;
    let mut scope = json!({"ownerWalletAddress": account});
    for k in ["tokenType", "appSource"] {
        if let Some(v) = r.get(k) {
            scope[k] = v.clone();
        }
    }
    let first = RunEvent::new(
        "run_created",
        json!({
            "runId": run_id, "request": r, "scope": scope,
            "uploads": uploads, "uploadUrls": parsed.upload_urls,
            "seeded": seeded, "seedUrls": parsed.seed_urls,
        }),
    );
    let meta = RunMeta {
        run_id: run_id.clone(),
        account_id: account,
        key_id: key.proof.key_id.clone(),
        secret_hash: key.proof.secret_hash.clone(),
        idempotency_key: idem,
        created_ms: crate::clock::unix_ms(),
        origin: super::chat::origin(req),
        kind: crate::runs::log::KIND_CHAT.into(),
    };
    let runs = Arc::clone(&s.runs);
    let (log, m, f) = (Arc::clone(&runs.log), meta.clone(), first.clone());
    let now = crate::clock::unix_ms();
    let until = runs.lease_until(now);
    let owner = runs.owner.clone();
    let created = blocking(move || {
        let c = log.create(&m, &f)?;
        if c == Created::New {
            log.claim(&m.run_id, &owner, now, until)?;
        }
        Ok(c)
    })
    .await
    .map_err(log_error)?;
    match created {
        Created::Existing(id) => {
            let (_, st) = load(s, &key, &id).await?;
            let run = snapshot(s, &st).await?;
            Ok(success(json!({"run": run, "idempotent": true})))
        }
        Created::New => {
            executor::execute(Arc::clone(s), run_id, None);
            let st = RunState::fold(std::slice::from_ref(&first));
            let mut r = HttpResponse::Accepted();
            Ok(r.json(json!({"status": "success", "data": {"run": st.snapshot(None)}})))
        }
    }
}

/// `GET /v1/chat/runs/{id}`.
pub async fn get(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<FrontState>,
) -> HttpResponse {
    respond(
        async {
            let key = authenticated(&req, &state).await?;
            let (_, st) = load(&state.services, &key, &id).await?;
            Ok(success(
                json!({"run": snapshot(&state.services, &st).await?}),
            ))
        }
        .await,
    )
}

/// `GET /v1/chat/runs/{id}/events?after=N`.
pub async fn events(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<FrontState>,
) -> HttpResponse {
    respond(
        async {
            let key = authenticated(&req, &state).await?;
            let after = super::run_events::after_query(&req)?;
            let (_, st) = load(&state.services, &key, &id).await?;
            let events: Vec<&RunEvent> = st
                .events
                .iter()
                .filter(|e| after.is_none_or(|a| e.sequence > a))
                .collect();
            Ok(success(json!({"events": events})))
        }
        .await,
    )
}

/// `POST /v1/chat/runs/{id}/cancel`: the run's executor (on this front or another) stops
/// it promptly; a run no front executes (it waits for its user) is cancelled here.
pub async fn cancel(
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
    state: web::Data<FrontState>,
) -> HttpResponse {
    respond(cancel_run(&req, &id, payload, &state).await)
}

async fn cancel_run(
    req: &HttpRequest,
    id: &str,
    payload: web::Payload,
    state: &FrontState,
) -> Result<HttpResponse, ApiError> {
    let s = &state.services;
    let key = authenticated(req, state).await?;
    let body = optional_body(req, payload).await?;
    let reason = body
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("cancelled by the user")
        .to_string();
    let (_, st) = load(s, &key, id).await?;
    if st.is_terminal() {
        return Ok(success(json!({"run": snapshot(s, &st).await?})));
    }
    let runs = Arc::clone(&s.runs);
    let (log, run, r) = (Arc::clone(&runs.log), id.to_string(), reason.clone());
    blocking(move || log.request_cancel(&run, &r))
        .await
        .map_err(log_error)?;
    if !runs.signal(id, Signal::Cancel(reason.clone())) {
        // No executor here: take the lease if no front holds it, and end the run.
        end_unexecuted(s, &st, "run_cancelled", json!({"reason": reason})).await?;
    }
    let st = wait_terminal(s, id, st).await?;
    Ok(success(json!({"run": snapshot(s, &st).await?})))
}

/// Appends a last event to a run no executor holds (one waiting for its user, or whose
/// front died); nothing when a live executor holds it (it ends the run itself).
async fn end_unexecuted(
    s: &Services,
    st: &RunState,
    kind: &str,
    payload: Value,
) -> Result<(), ApiError> {
    let runs = Arc::clone(&s.runs);
    let (log, run, owner) = (Arc::clone(&runs.log), st.run_id.clone(), runs.owner.clone());
    let now = crate::clock::unix_ms();
    let until = runs.lease_until(now);
    let mut last = RunEvent::new(kind, payload);
    last.sequence = st.next_sequence();
    let r = blocking(move || {
        if log.claim(&run, &owner, now, until)?.is_none() {
            return Ok(());
        }
        log.append(&run, &owner, &[last])?;
        log.retire(&run, &owner, now)
    })
    .await;
    match r {
        Ok(()) | Err(LogError::Fenced(_)) => Ok(()),
        Err(e) => Err(log_error(e)),
    }
}

/// The run once it ended (or as it stands after [`CANCEL_WAIT`]).
async fn wait_terminal(s: &Services, id: &str, st: RunState) -> Result<RunState, ApiError> {
    let mut st = st;
    let mut live = s
        .runs
        .followers
        .follow(id, Some(st.next_sequence().saturating_sub(1)));
    let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
    while !st.is_terminal() {
        match tokio::time::timeout_at(deadline, live.recv()).await {
            Ok(Some(e)) if e.sequence == st.next_sequence() => st.apply(&e),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    Ok(st)
}

/// A body that may be absent (the SDKs send `{}` or nothing).
pub(super) async fn optional_body(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Value, ApiError> {
    let bytes = super::http::body_bytes(req, payload, MAX_BODY).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let v = super::http::parse_json(&bytes)?;
    if !v.is_object() {
        return Err(ApiError::bad_body("The body must be a JSON object"));
    }
    Ok(v)
}

/// `POST /v1/chat/runs/{id}/confirm-cost`.
pub async fn confirm_cost(
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
    state: web::Data<FrontState>,
) -> HttpResponse {
    respond(confirm(&req, &id, payload, &state).await)
}

async fn confirm(
    req: &HttpRequest,
    id: &str,
    payload: web::Payload,
    state: &FrontState,
) -> Result<HttpResponse, ApiError> {
    let s = &state.services;
    let key = authenticated(req, state).await?;
    let idem = idempotency_key(req)?;
    let body = optional_body(req, payload).await?;
    // Another account's run is not there at all, whatever the body says.
    let (_, st) = load(s, &key, id).await?;
    let field = |snake: &str, camel: &str| {
        body.get(snake)
            .or_else(|| body.get(camel))
            .filter(|v| !v.is_null())
            .cloned()
    };
    let call_id = field("tool_call_id", "toolCallId")
        .and_then(|v| v.as_str().map(String::from))
        .ok_or_else(|| ApiError::invalid("tool_call_id", "`tool_call_id` is required"))?;
    let decision = match field("decision", "decision")
        .as_ref()
        .and_then(Value::as_str)
    {
        Some(d @ ("confirm" | "cancel")) => d.to_string(),
        _ => {
            return Err(ApiError::invalid(
                "decision",
                "`decision` must be \"confirm\" or \"cancel\"",
            ))
        }
    };
    let preview = field("acceptedCostPreview", "accepted_cost_preview");
    // A decision sent again under its key is the same decision: success, not conflict.
    let repeated = idem.as_ref().is_some_and(|k| {
        st.events.iter().any(|e| {
            e.kind == "run_cost_confirmation_resolved" && e.payload["idempotencyKey"] == k.as_str()
        })
    });
    if repeated {
        return Ok(success(json!({"run": snapshot(s, &st).await?})));
    }
    let cost_pause = st
        .waiting
        .as_ref()
        .is_some_and(|w| w["reason"] == "cost_approval_required");
    if !cost_pause {
        return Err(ApiError::conflict(
            "This run is not waiting for a cost approval",
        ));
    }
    let pending = st.pending_approval();
    if !pending.contains(&call_id) {
        return Err(ApiError::invalid(
            "tool_call_id",
            format!("`{call_id}` is not a call this pause holds"),
        ));
    }
    if decision == "confirm" {
        let preview = preview.ok_or_else(|| {
            ApiError::invalid("acceptedCostPreview", "Confirming needs `acceptedCostPreview`: the preview the user approved, sent back unchanged")
        })?;
        st.preview_matches(&preview, crate::clock::unix_ms()).map_err(|why| {
            ApiError::conflict(format!("The cost preview has {why}; read the run again and approve its current preview"))
        })?;
    }
    let resolved = RunEvent::new(
        "run_cost_confirmation_resolved",
        json!({"toolCallId": call_id, "decision": decision, "pendingToolCallIds": pending, "idempotencyKey": idem, "reason": field("reason", "reason")}),
    );
    let runs = Arc::clone(&s.runs);
    let (log, run, owner) = (Arc::clone(&runs.log), id.to_string(), runs.owner.clone());
    let now = crate::clock::unix_ms();
    let until = runs.lease_until(now);
    let mut events = vec![resolved];
    if decision == "cancel" {
        events.push(RunEvent::new(
            "run_cancelled",
            json!({"reason": "the user declined the cost"}),
        ));
    }
    for (i, e) in events.iter_mut().enumerate() {
        e.sequence = st.next_sequence() + i as u64;
    }
    let confirmed = decision == "confirm";
    blocking(move || {
        if log.claim(&run, &owner, now, until)?.is_none() {
            return Err(LogError::Fenced(run));
        }
        log.append(&run, &owner, &events)?;
        if confirmed {
            // Active again, under this front's lease (renewed, it records the lease's end).
            log.activate(&run)?;
            log.claim(&run, &owner, now, until).map(drop)
        } else {
            log.retire(&run, &owner, now)
        }
    })
    .await
    .map_err(|e| match e {
        LogError::Fenced(_) => ApiError::conflict("The run changed meanwhile; read it again"),
        e => log_error(e),
    })?;
    if confirmed {
        executor::execute(Arc::clone(s), id.to_string(), None);
    }
    let (_, st) = load(s, &key, id).await?;
    Ok(success(json!({"run": snapshot(s, &st).await?})))
}
