//! Starting a workflow: the start body read (either case), its plan checked, its media
//! resolved, the whole DAG priced (`billingPreview`), and its first events written. A
//! workflow whose estimate is over `max_estimated_capacity_units` (without `confirm_cost`)
//! starts waiting for its user's approval; `resume` approves it.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::plan::Plan;
use crate::api::error::ApiError;
use crate::billing::accounts::Presented;
use crate::protocol::media::Asset;
use crate::runs::event::RunEvent;
use crate::runs::log::{Created, RunMeta, KIND_WORKFLOW};
use crate::runs::{blocking, Runs};
use crate::session::Services;
use crate::tools::call::units_of;
use crate::tools::tool_loop::unit_price;

/// The start body's options, by record name and wire name.
const OPTIONS: [(&str, &str); 8] = [
    ("tokenType", "token_type"),
    ("billingMode", "billing_mode"),
    ("appSource", "app_source"),
    ("maxEstimatedCapacityUnits", "max_estimated_capacity_units"),
    ("confirmCost", "confirm_cost"),
    ("safeContentFilter", "safe_content_filter"),
    ("workflowId", "workflow_id"),
    ("inputs", "inputs"),
];

/// A workflow ready to be written.
pub struct NewWorkflow {
    /// The record's options (camelCase): what resume and reseed keep.
    pub request: Value,
    pub input: Value,
    pub plan: Plan,
    pub uploads: Vec<Asset>,
    pub upload_urls: Vec<String>,
    pub reseed: Option<Value>,
}

/// The options of a start (or resume, reseed) body, checked.
pub fn options(body: &Map<String, Value>) -> Result<Value, ApiError> {
    let mut out = Map::new();
    for (camel, snake) in OPTIONS {
        if let Some(v) = body
            .get(snake)
            .or_else(|| body.get(camel))
            .filter(|v| !v.is_null())
        {
            let ok = match camel {
                "maxEstimatedCapacityUnits" => v.as_f64().is_some_and(|n| n >= 0.0),
                "confirmCost" | "safeContentFilter" => v.is_boolean(),
                "inputs" => v.is_object(),
                _ => v.is_string(),
            };
            if !ok {
                return Err(ApiError::invalid(
                    snake,
                    format!("`{snake}` has the wrong type"),
                ));
            }
            out.insert(camel.into(), v.clone());
        }
    }
    if let Some(t) = out.get("tokenType").and_then(Value::as_str) {
        if !matches!(t, "spark" | "sogni" | "auto") {
            return Err(ApiError::invalid(
                "token_type",
                "`token_type` is spark or sogni",
            ));
        }
    }
    out.entry("safeContentFilter").or_insert(json!(true));
    Ok(Value::Object(out))
}

/// The `media_references` URLs of a start body; inline `data:` media is a 400.
pub fn media_urls(body: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let refs = match body
        .get("media_references")
        .or_else(|| body.get("mediaReferences"))
    {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(r)) => r,
        Some(_) => {
            return Err(ApiError::invalid(
                "media_references",
                "`media_references` must be an array",
            ))
        }
    };
    let mut urls = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let path = format!("media_references[{i}]");
        for f in ["dataUri", "data_uri", "data"] {
            if r.get(f).is_some_and(|v| !v.is_null()) {
                return Err(inline(&format!("{path}.{f}")));
            }
        }
        let url = match r {
            Value::String(u) => u.as_str(),
            _ => r
                .get("url")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid(&path, format!("{path} needs a `url`")))?,
        };
        if url.trim_start().starts_with("data:") {
            return Err(inline(&format!("{path}.url")));
        }
        urls.push(url.to_string());
    }
    Ok(urls)
}

fn inline(path: &str) -> ApiError {
    ApiError::invalid(
        path,
        format!("Durable workflows take media by http(s) URL, not inline `data:` ({path}); upload it first (GET /v2/image/uploadUrl)"),
    )
}

/// The DAG's price: each step's units at its tool's price, in USD and capacity units.
pub fn billing_preview(services: &Services, plan: &Plan, request: &Value) -> Value {
    let unit = services.runs.config.capacity_unit_usd.to_f64();
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let mut total = 0.0;
    let per_step: Vec<Value> = plan
        .steps
        .iter()
        .filter_map(|s| {
            let def = s.def()?;
            let usd = unit_price(&services.config.tools, def).to_f64() * units_of(def, &s.arguments) as f64;
            total += usd;
            Some(json!({"stepId": s.id, "toolName": s.tool_name, "estimatedUsd": usd, "capacityUnits": round(usd / unit)}))
        })
        .collect();
    json!({
        "estimatedCapacityUnits": round(total / unit),
        "estimatedUsd": total,
        "tokenType": request["tokenType"].as_str().unwrap_or("spark"),
        "maxEstimatedCapacityUnits": request["maxEstimatedCapacityUnits"],
        "perStepBreakdown": per_step,
    })
}

/// Writes a new workflow (or finds the one the account made under `idempotency_key`) and,
/// unless it must wait for approval, starts executing it here. Returns its id and whether
/// it is new.
pub async fn create(
    services: &Arc<Services>,
    key: &Presented,
    origin: String,
    idempotency_key: Option<String>,
    new: NewWorkflow,
) -> Result<(String, bool), ApiError> {
    let id = format!(
        "{}{}",
        super::ID_PREFIX,
        crate::ids::random_hex(16).map_err(|e| ApiError::logged("a workflow id", e))?
    );
    let preview = billing_preview(services, &new.plan, &new.request);
    let over = new.request["maxEstimatedCapacityUnits"]
        .as_f64()
        .is_some_and(|max| preview["estimatedCapacityUnits"].as_f64().unwrap_or(0.0) > max + 1e-9)
        && new.request["confirmCost"] != true;
    let mut data = json!({
        "workflowId": id, "title": new.plan.title, "request": new.request, "input": new.input,
        "plan": new.plan.to_json(), "uploads": new.uploads, "uploadUrls": new.upload_urls,
        "billingPreview": preview,
    });
    if let Some(r) = &new.reseed {
        data["reseed"] = r.clone();
    }
    let first = RunEvent::new(
        "workflow_started",
        json!({"status": "queued", "message": "Workflow accepted", "data": data}),
    );
    let mut waiting = RunEvent::new(
        "workflow_waiting_for_user",
        json!({"status": "waiting_for_user",
            "message": format!("The plan's estimate ({} capacity units) is over max_estimated_capacity_units ({}); resume the workflow to approve it", preview["estimatedCapacityUnits"], new.request["maxEstimatedCapacityUnits"]),
            "data": {"reason": "cost_approval_required", "billingPreview": preview}}),
    );
    waiting.sequence = 1;
    let meta = RunMeta {
        run_id: id.clone(),
        account_id: key.record.account_id.clone(),
        key_id: key.proof.key_id.clone(),
        secret_hash: key.proof.secret_hash.clone(),
        idempotency_key,
        created_ms: crate::clock::unix_ms(),
        origin,
        kind: KIND_WORKFLOW.into(),
    };
    let runs: &Arc<Runs> = &services.runs;
    let (log, owner) = (Arc::clone(&runs.log), runs.owner.clone());
    let now = crate::clock::unix_ms();
    let until = runs.lease_until(now);
    let created = blocking(move || {
        let c = log.create(&meta, &first)?;
        if c == Created::New {
            log.claim(&meta.run_id, &owner, now, until)?;
            if over {
                log.append(&meta.run_id, &owner, &[waiting])?;
                log.park(&meta.run_id, &owner)?;
            }
        }
        Ok(c)
    })
    .await
    .map_err(|e| ApiError::logged("the run log", e))?;
    match created {
        Created::Existing(existing) => Ok((existing, false)),
        Created::New => {
            if !over {
                super::executor::execute(Arc::clone(services), id.clone(), None);
            }
            Ok((id, true))
        }
    }
}
