//! What hosted calls produce, in the shapes clients read: one `sogni_tool_results` element
//! per call (`{ok, tool, status, output_assets, startIndex, indices}` or `{ok: false, tool,
//! error_type, message, retryable}`), the progress notes streamed as `sogni_tool_progress`,
//! and the request's `hosted_tool_sequence` workflow record with its `creative_workflows`
//! reference. The model reads the same element as the call's `tool` message.

use serde::Serialize;
use serde_json::{json, Value};

use crate::media::signing::UrlSigner;
use crate::protocol::media::Asset;

/// A hosted call's failure, as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError {
    pub error_type: String,
    pub message: String,
    pub retryable: bool,
}

impl ToolError {
    pub fn new(error_type: &str, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            error_type: error_type.into(),
            message: message.into(),
            retryable,
        }
    }
}

/// One hosted call's outcome.
#[derive(Debug, Clone)]
pub struct CallResult {
    pub call_id: String,
    pub tool: String,
    /// The arguments the model wrote.
    pub params: Value,
    pub outcome: Result<Made, ToolError>,
}

/// A media call's outputs and where they landed in the request's media index.
#[derive(Debug, Clone)]
pub struct Made {
    pub assets: Vec<Asset>,
    pub indices: Vec<i64>,
    /// Composition tools answer with a result object instead of media.
    pub result: Option<Value>,
    /// The tokens a composition tool's sub-generation used (billed by its own turn).
    pub usage: Option<crate::api::chat_response::Usage>,
}

impl CallResult {
    /// The `sogni_tool_results` element (and the model's `tool` message), with signed URLs
    /// under `origin`.
    pub fn json(&self, signer: &UrlSigner, origin: &str, now: u64) -> Value {
        match &self.outcome {
            Ok(made) => {
                let assets: Vec<Value> = made
                    .assets
                    .iter()
                    .map(|a| {
                        let mut o = json!({
                            "asset_id": a.id,
                            "type": a.kind.as_str(),
                            "url": signer.url(origin, &a.id, now),
                        });
                        if let Some(w) = a.width {
                            o["width"] = w.into();
                        }
                        if let Some(h) = a.height {
                            o["height"] = h.into();
                        }
                        if let Some(ms) = a.duration_ms {
                            o["duration_seconds"] = (ms as f64 / 1000.0).into();
                        }
                        o
                    })
                    .collect();
                let mut o = json!({
                    "ok": true,
                    "tool": self.tool,
                    "tool_call_id": self.call_id,
                    "status": "completed",
                    "output_assets": assets,
                    "startIndex": made.indices.first().copied().unwrap_or(0),
                    "indices": made.indices,
                    "params": self.params,
                });
                if let Some(r) = &made.result {
                    o["result"] = r.clone();
                }
                o
            }
            Err(e) => json!({
                "ok": false,
                "tool": self.tool,
                "tool_call_id": self.call_id,
                "error_type": e.error_type,
                "message": e.message,
                "retryable": e.retryable,
            }),
        }
    }
}

/// A hosted call's progress, streamed as `sogni_tool_progress`.
#[derive(Debug, Clone, Serialize)]
pub struct ToolProgress {
    pub tool: String,
    pub call_id: String,
    /// `queued`, `in_progress`, `completed` or `failed`.
    pub status: &'static str,
    pub progress: f32,
}

/// What a request's hosted calls produced, for the final response.
#[derive(Debug, Clone, Default)]
pub struct HostedOutcome {
    /// `sogni_tool_results`, in call order.
    pub results: Vec<Value>,
    /// `creative_workflows`.
    pub workflows: Vec<Value>,
}

impl HostedOutcome {
    /// Adds `sogni_tool_results` and `creative_workflows` to a response or final chunk
    /// (only when hosted calls ran).
    pub fn add_to(&self, response: &mut Value) {
        if !self.results.is_empty() {
            response["sogni_tool_results"] = Value::Array(self.results.clone());
            response["creative_workflows"] = Value::Array(self.workflows.clone());
        }
    }
}

/// The durable record of a request's hosted calls (contract §4's workflow shape, kind
/// `hosted_tool_sequence`), from each call and its `sogni_tool_results` element, and its
/// `creative_workflows` reference.
pub fn workflow_record(
    workflow_id: &str,
    account_id: &str,
    calls: &[(CallResult, Value)],
    created_ms: u64,
) -> (Value, Value) {
    let failed = calls.iter().any(|(c, _)| c.outcome.is_err());
    let all_failed = calls.iter().all(|(c, _)| c.outcome.is_err());
    let status = match (failed, all_failed) {
        (false, _) => "completed",
        (true, false) => "partial_failure",
        (true, true) => "failed",
    };
    let now = crate::clock::unix_ms();
    let steps: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, (c, r))| {
            json!({
                "id": c.call_id,
                "sequence": i,
                "toolName": c.tool,
                "arguments": c.params,
                "status": if c.outcome.is_ok() { "completed" } else { "failed" },
                "artifacts": r.get("output_assets").cloned().unwrap_or(json!([])),
                "error": r.get("message").cloned(),
            })
        })
        .collect();
    let mut events =
        vec![json!({"sequence": 0, "type": "workflow_started", "timestamp": created_ms})];
    for (i, s) in steps.iter().enumerate() {
        let kind = if s["status"] == "completed" {
            "step_completed"
        } else {
            "step_failed"
        };
        events.push(
            json!({"sequence": i + 1, "type": kind, "timestamp": now, "data": {"stepId": s["id"]}}),
        );
    }
    let terminal = match status {
        "failed" => "workflow_failed",
        _ => "workflow_completed",
    };
    events.push(
        json!({"sequence": events.len(), "type": terminal, "status": status, "timestamp": now}),
    );
    let artifacts: Vec<Value> = steps
        .iter()
        .flat_map(|s| s["artifacts"].as_array().cloned().unwrap_or_default())
        .collect();
    let record = json!({
        "workflowId": workflow_id,
        "accountId": account_id,
        "kind": "hosted_tool_sequence",
        "status": status,
        "input": {"kind": "hosted_tool_sequence"},
        "plan": {"steps": steps.iter().map(|s| json!({"id": s["id"], "sequence": s["sequence"], "toolName": s["toolName"], "arguments": s["arguments"], "dependsOn": []})).collect::<Vec<_>>()},
        "steps": steps,
        "events": events,
        "artifacts": artifacts,
        "createTime": created_ms,
        "updateTime": now,
    });
    let base = format!("/v1/creative-agent/workflows/{workflow_id}");
    let reference = json!({
        "workflowId": workflow_id,
        "status": status,
        "url": base,
        "eventsUrl": format!("{base}/events"),
        "streamUrl": format!("{base}/events/stream"),
    });
    (record, reference)
}
