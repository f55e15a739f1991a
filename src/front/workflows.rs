//! The creative workflow routes (`/v1/creative-agent/workflows`, contract §4) in Sogni's
//! envelope: start (an inline plan or a template), list, get, cancel, resume, reseed and
//! confirm-cost (its events are [`super::workflow_events`]). A workflow belongs to the
//! account whose key started it; any other key gets 404 on every route.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use super::creative::{authenticated, success};
use super::http::json_body;
use super::runs::{idempotency_key, optional_body, respond};
use super::FrontState;
use crate::api::error::ApiError;
use crate::billing::accounts::Presented;
use crate::runs::event::RunEvent;
use crate::runs::log::{LogError, KIND_WORKFLOW};
use crate::runs::{blocking, Signal};
use crate::session::Services;
use crate::workflows::plan::Plan;
use crate::workflows::start::{self, NewWorkflow};
use crate::workflows::state::WorkflowState;
use crate::workflows::templates::instantiate;

const MAX_BODY: usize = 4 << 20;
/// How long a cancel waits for the executor to end the workflow.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

fn log_error(e: LogError) -> ApiError {
    ApiError::logged("the run log", e)
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("No workflow `{id}`"))
}

/// Workflow `id` of `key`'s account, folded; 404 for another account's or a chat run.
pub(super) async fn load(
    services: &Services,
    key: &Presented,
    id: &str,
) -> Result<WorkflowState, ApiError> {
    let (log, run) = (Arc::clone(&services.runs.log), id.to_string());
    let (meta, events) = blocking(move || match log.meta(&run)? {
        Some(m) => Ok((Some(m), log.read(&run, None)?)),
        None => Ok((None, Vec::new())),
    })
    .await
    .map_err(log_error)?;
    match meta {
        Some(m)
            if m.account_id == key.record.account_id
                && m.kind == KIND_WORKFLOW
                && !events.is_empty() =>
        {
            Ok(WorkflowState::fold(&events))
        }
        _ => Err(not_found(id)),
    }
}

pub(super) async fn record(services: &Services, st: &WorkflowState) -> Result<Value, ApiError> {
    let (log, run) = (Arc::clone(&services.runs.log), st.id.clone());
    let lease = blocking(move || log.lease(&run)).await.map_err(log_error)?;
    Ok(st.record(lease.as_ref()))
}

/// The plan of a start body: its `input`, or the template `workflow_id` names made with
/// `inputs` (whose media join the uploads).
async fn plan_of(
    s: &Services,
    key: &Presented,
    body: &Map<String, Value>,
    request: &Value,
    urls: &mut Vec<String>,
) -> Result<(Value, Plan, Vec<crate::protocol::media::Asset>), ApiError> {
    let input = body.get("input").filter(|v| !v.is_null());
    let template = match (input, request.get("workflowId")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "workflow_id",
                "Send `input` (a plan) or `workflow_id` (a template), not both",
            ))
        }
        (None, None) => return Err(ApiError::invalid(
            "input",
            "Send `input` (a plan with steps) or `workflow_id` (a template) to start a workflow",
        )),
        (Some(_), None) => None,
        (None, Some(t)) => {
            let t = super::templates::readable(s, key, t.as_str().unwrap_or_default()).await?;
            let body = t.body.as_object().cloned().unwrap_or_default();
            let (values, media) = instantiate::read_inputs(&body, &request["inputs"])?;
            urls.extend(media);
            Some((body, values))
        }
    };
    let mut uploads = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        uploads.push(
            crate::runs::request::resolve(
                &s.media,
                url,
                &key.record.account_id,
                &format!("media_references[{i}]"),
            )
            .await?,
        );
    }
    let input = match (input, template) {
        (Some(i), _) => i.clone(),
        (None, Some((body, values))) => {
            let given = instantiate::Given {
                values,
                uploads: uploads.clone(),
                upload_urls: urls.clone(),
            };
            instantiate::instantiate(&body, &given)?
        }
        (None, None) => unreachable!("one of the two was checked above"),
    };
    let plan = Plan::parse(&input, &uploads)?;
    Ok((input, plan, uploads))
}

/// `POST /v1/creative-agent/workflows`.
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<FrontState>,
) -> HttpResponse {
    respond(
        async {
            let s = &state.services;
            let key = authenticated(&req, &state).await?;
            let _permit = s
                .billing
                .admit(&key.record, s.config.limits)
                .map_err(|l| ApiError::rate_limited(l.message, l.retry_after_secs))?;
            let idem = idempotency_key(&req)?;
            let body = json_body(&req, payload, MAX_BODY).await?;
            let body = body.as_object().cloned().unwrap_or_default();
            let request = start::options(&body)?;
            let mut urls = start::media_urls(&body)?;
            let (input, plan, uploads) = plan_of(s, &key, &body, &request, &mut urls).await?;
            let new = NewWorkflow {
                request,
                input,
                plan,
                uploads,
                upload_urls: urls,
                reseed: None,
            };
            let (id, fresh) = start::create(s, &key, super::chat::origin(&req), idem, new).await?;
            let st = load(s, &key, &id).await?;
            let mut data = json!({"workflow": record(s, &st).await?});
            if !fresh {
                data["idempotent"] = json!(true);
            }
            Ok(HttpResponse::Created().json(json!({"status": "success", "data": data})))
        }
        .await,
    )
}

fn query(req: &HttpRequest, name: &str) -> Result<Option<usize>, ApiError> {
    let q = web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .map_err(|_| ApiError::bad_body("The query string is malformed"))?;
    q.get(name)
        .map(|v| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| ApiError::invalid(name, format!("`{name}` must be a whole number")))
        })
        .transpose()
}

/// `GET /v1/creative-agent/workflows?limit&offset`.
pub async fn list(req: HttpRequest, state: web::Data<FrontState>) -> HttpResponse {
    respond(
        async {
            let s = &state.services;
            let key = authenticated(&req, &state).await?;
            let limit = query(&req, "limit")?.unwrap_or(20);
            if !(1..=100).contains(&limit) {
                return Err(ApiError::invalid("limit", "`limit` is 1 to 100"));
            }
            let offset = query(&req, "offset")?.unwrap_or(0);
            let (log, account) = (Arc::clone(&s.runs.log), key.record.account_id.clone());
            let ids = blocking(move || log.list(&account, KIND_WORKFLOW, offset, limit))
                .await
                .map_err(log_error)?;
            let mut workflows = Vec::new();
            for id in &ids {
                // A workflow deleted meanwhile is left out.
                if let Ok(st) = load(s, &key, id).await {
                    workflows.push(record(s, &st).await?);
                }
            }
            let next = (ids.len() == limit).then_some(offset + limit);
            Ok(success(json!({"workflows": workflows, "next": next})))
        }
        .await,
    )
}

/// `GET /v1/creative-agent/workflows/{id}`.
pub async fn get(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<FrontState>,
) -> HttpResponse {
    respond(
        async {
            let key = authenticated(&req, &state).await?;
            let st = load(&state.services, &key, &id).await?;
            Ok(success(
                json!({"workflow": record(&state.services, &st).await?}),
            ))
        }
        .await,
    )
}

/// Takes the lease of a workflow no live executor holds and appends `events`; `then` runs
/// in the same blocking call (reopen, activate, retire). False when a live executor holds it.
async fn write_unexecuted(
    s: &Services,
    st: &WorkflowState,
    events: Vec<RunEvent>,
    before: fn(&dyn crate::runs::log::RunLog, &str) -> Result<(), LogError>,
    after: fn(&dyn crate::runs::log::RunLog, &str, &str, u64) -> Result<(), LogError>,
) -> Result<bool, ApiError> {
    let runs = Arc::clone(&s.runs);
    let (log, run, owner) = (Arc::clone(&runs.log), st.id.clone(), runs.owner.clone());
    let now = crate::clock::unix_ms();
    let until = runs.lease_until(now);
    let first = st.next_sequence();
    let r = blocking(move || {
        if log.claim(&run, &owner, now, until)?.is_none() {
            return Ok(false);
        }
        before(log.as_ref(), &run)?;
        // Renewed, the lease's end is recorded among the active runs (a reopened run is
        // there with none, and would look orphaned).
        log.claim(&run, &owner, now, until)?;
        let mut events = events;
        for (i, e) in events.iter_mut().enumerate() {
            e.sequence = first + i as u64;
        }
        log.append(&run, &owner, &events)?;
        after(log.as_ref(), &run, &owner, now)?;
        Ok(true)
    })
    .await;
    match r {
        Ok(done) => Ok(done),
        Err(LogError::Fenced(_)) => Ok(false),
        Err(e) => Err(log_error(e)),
    }
}

/// `POST /v1/creative-agent/workflows/{id}/cancel`.
pub async fn cancel(
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
    state: web::Data<FrontState>,
) -> HttpResponse {
    respond(
        async {
            let s = &state.services;
            let key = authenticated(&req, &state).await?;
            let body = optional_body(&req, payload).await?;
            let reason = body["reason"]
                .as_str()
                .unwrap_or("cancelled by the user")
                .to_string();
            let st = load(s, &key, &id).await?;
            if st.is_terminal() {
                return Ok(success(
                    json!({"workflow": record(s, &st).await?, "transitioned": false}),
                ));
            }
            let (log, run, r) = (Arc::clone(&s.runs.log), id.to_string(), reason.clone());
            blocking(move || log.request_cancel(&run, &r))
                .await
                .map_err(log_error)?;
            if !s.runs.signal(&id, Signal::Cancel(reason.clone())) {
                let last = RunEvent::new(
                    "workflow_cancelled",
                    json!({"status": "cancelled", "message": reason, "data": {"reason": reason}}),
                );
                write_unexecuted(
                    s,
                    &st,
                    vec![last],
                    |_, _| Ok(()),
                    |log, run, owner, now| log.retire(run, owner, now),
                )
                .await?;
            }
            let st = wait_terminal(s, &id, st).await;
            let transitioned = st.is_terminal();
            Ok(success(
                json!({"workflow": record(s, &st).await?, "transitioned": transitioned}),
            ))
        }
        .await,
    )
}

async fn wait_terminal(s: &Services, id: &str, st: WorkflowState) -> WorkflowState {
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
    st
}

/// `POST /v1/creative-agent/workflows/{id}/resume`: a workflow waiting for cost approval
/// goes on (approved); a failed, partly failed or cancelled one runs its unfinished steps
/// again as new attempts. Anything else is left as it is (`resumed: false`).
pub async fn resume(
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
    state: web::Data<FrontState>,
) -> HttpResponse {
    respond(
        async {
            let s = &state.services;
            let key = authenticated(&req, &state).await?;
            let body = optional_body(&req, payload).await?;
            start::options(body.as_object().unwrap_or(&Map::new()))?;
            let st = load(s, &key, &id).await?;
            let waiting = st.waiting_reason.is_some();
            let ended = st.is_terminal() && st.status != "completed";
            if !waiting && !ended {
                return Ok(success(
                    json!({"workflow": record(s, &st).await?, "resumed": false}),
                ));
            }
            let (st, resumed) = go_on(s, &key, &id, &st).await?;
            Ok(success(
                json!({"workflow": record(s, &st).await?, "resumed": resumed}),
            ))
        }
        .await,
    )
}

/// Sets a waiting (approved) or ended workflow going again here; false when a live
/// executor holds it.
async fn go_on(
    s: &Arc<Services>,
    key: &Presented,
    id: &str,
    st: &WorkflowState,
) -> Result<(WorkflowState, bool), ApiError> {
    let data = if st.waiting_reason.is_some() {
        json!({"approved": true, "reason": st.waiting_reason})
    } else {
        json!({"resumed": true, "from": st.status})
    };
    let progress = RunEvent::new(
        "workflow_progress",
        json!({"status": "running", "message": "Resumed by the user", "data": data}),
    );
    let resumed = write_unexecuted(
        s,
        st,
        vec![progress],
        |log, run| log.reopen(run),
        |_, _, _, _| Ok(()),
    )
    .await?;
    if resumed {
        crate::workflows::executor::execute(Arc::clone(s), id.to_string(), None);
    }
    Ok((load(s, key, id).await?, resumed))
}

/// `POST /v1/creative-agent/workflows/{id}/confirm-cost {decision, acceptedCostPreview}`
/// (contract §4, v2): approve a cost pause with the `billingPreview` it showed, sent back
/// (a preview whose estimate changed is a 409), or decline it, which cancels the workflow.
pub async fn confirm_cost(
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
    state: web::Data<FrontState>,
) -> HttpResponse {
    respond(
        async {
            let s = &state.services;
            let key = authenticated(&req, &state).await?;
            let body = optional_body(&req, payload).await?;
            let st = load(s, &key, &id).await?;
            let decision = body["decision"].as_str().unwrap_or_default();
            if !matches!(decision, "confirm" | "cancel") {
                return Err(ApiError::invalid("decision", "`decision` must be \"confirm\" or \"cancel\""));
            }
            if st.waiting_reason.as_deref() != Some("cost_approval_required") {
                return Err(ApiError::conflict("This workflow is not waiting for a cost approval"));
            }
            if decision == "cancel" {
                let last = RunEvent::new(
                    "workflow_cancelled",
                    json!({"status": "cancelled", "message": "the user declined the cost", "data": {"reason": "the user declined the cost"}}),
                );
                write_unexecuted(s, &st, vec![last], |_, _| Ok(()), |log, run, owner, now| log.retire(run, owner, now)).await?;
                let st = load(s, &key, &id).await?;
                return Ok(success(json!({"workflow": record(s, &st).await?})));
            }
            let preview = body.get("acceptedCostPreview").or_else(|| body.get("accepted_cost_preview")).filter(|p| !p.is_null());
            let preview = preview.ok_or_else(|| {
                ApiError::invalid("acceptedCostPreview", "Confirming needs `acceptedCostPreview`: the workflow's billingPreview, sent back unchanged")
            })?;
            let units = |v: &Value| v["estimatedCapacityUnits"].as_f64();
            if units(preview).is_none() || units(preview) != units(&st.billing_preview) {
                return Err(ApiError::conflict("The cost preview is not the workflow's current one; read the workflow again and approve its billingPreview"));
            }
            let (st, _) = go_on(s, &key, &id, &st).await?;
            Ok(success(json!({"workflow": record(s, &st).await?})))
        }
        .await,
    )
}

/// `POST /v1/creative-agent/workflows/{id}/reseed`: a new workflow with the same plan and
/// new seeds (`seed_overrides` per step, random for the others).
pub async fn reseed(
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
    state: web::Data<FrontState>,
) -> HttpResponse {
    respond(
        async {
            let s = &state.services;
            let key = authenticated(&req, &state).await?;
            let idem = idempotency_key(&req)?;
            let body = optional_body(&req, payload).await?;
            let body = body.as_object().cloned().unwrap_or_default();
            let overrides = match body
                .get("seed_overrides")
                .or_else(|| body.get("seedOverrides"))
            {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(o)) => o.clone(),
                Some(_) => {
                    return Err(ApiError::invalid(
                        "seed_overrides",
                        "`seed_overrides` maps step ids to seeds",
                    ))
                }
            };
            let st = load(s, &key, &id).await?;
            let plan = st
                .plan
                .clone()
                .ok_or_else(|| ApiError::conflict("This workflow has no plan to reseed"))?;
            if let Some(k) = overrides
                .keys()
                .find(|k| !plan.steps.iter().any(|st| &st.id == *k))
            {
                return Err(ApiError::invalid(
                    "seed_overrides",
                    format!("no step `{k}` in this workflow"),
                ));
            }
            let mut steps = Vec::new();
            for step in plan.steps.iter().filter(|st| {
                st.def()
                    .is_some_and(|d| d.parameters["properties"].get("seed").is_some())
            }) {
                let seed = match overrides.get(&step.id) {
                    Some(v) => v
                        .as_u64()
                        .filter(|n| *n <= u64::from(u32::MAX))
                        .ok_or_else(|| {
                            ApiError::invalid(
                                "seed_overrides",
                                format!(
                                    "the seed of `{}` must be a whole number up to {}",
                                    step.id,
                                    u32::MAX
                                ),
                            )
                        })?,
                    None => u64::from_str_radix(
                        &crate::ids::random_hex(4).map_err(|e| ApiError::logged("a seed", e))?,
                        16,
                    )
                    .unwrap_or(0),
                };
                steps.push(json!({"stepId": step.id, "seed": seed}));
            }
            let mut request = st.request.clone();
            let opts = start::options(&body)?;
            for (k, v) in opts.as_object().into_iter().flatten() {
                if k != "safeContentFilter" {
                    request[k] = v.clone();
                }
            }
            let reseed = json!({"cloned_from_run_id": st.id, "steps": steps});
            let new = NewWorkflow {
                request,
                input: st.input.clone(),
                plan,
                uploads: st.uploads.clone(),
                upload_urls: st.upload_urls.clone(),
                reseed: Some(reseed),
            };
            let idem = idem.map(|k| format!("reseed:{id}:{k}"));
            let (new_id, fresh) =
                start::create(s, &key, super::chat::origin(&req), idem, new).await?;
            let wf = load(s, &key, &new_id).await?;
            let mut data = json!({"workflow": record(s, &wf).await?, "reseed": wf.reseed});
            if !fresh {
                data["idempotent"] = json!(true);
            }
            Ok(success(data))
        }
        .await,
    )
}
