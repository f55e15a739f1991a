//! A workflow's state as a fold over its event log, like a chat run's: the executor keeps
//! one and applies each event it appends, and `GET /v1/creative-agent/workflows/:id` folds
//! the same log into the record of contract §4. Each event's payload is the wire event's
//! `{status?, message?, data?}`; [`wire`] adds its id, workflow id, sequence and timestamp.

use serde_json::{json, Value};

use super::plan::Plan;
use crate::protocol::media::Asset;
use crate::runs::event::{parse_iso, RunEvent};
use crate::runs::log::Lease;
use crate::runs::state::SCHEMA_VERSION;

/// The events that end a workflow (until a resume).
pub const TERMINAL: [&str; 3] = [
    "workflow_completed",
    "workflow_failed",
    "workflow_cancelled",
];

/// Where one step stands.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepState {
    /// queued, running, completed, failed, cancelled, or skipped (a step it needs failed).
    pub status: String,
    pub job_id: Option<String>,
    /// Attempts started (the job id's `-aN`).
    pub attempt: u32,
    /// The tool its last attempt ran (an interactive step's model chose it).
    pub tool: Option<String>,
    pub arguments: Option<Value>,
    /// The outputs as the record shows them, and as assets.
    pub artifacts: Vec<Value>,
    pub assets: Vec<Asset>,
    pub error: Option<Value>,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct WorkflowState {
    pub id: String,
    pub status: String,
    pub title: Option<String>,
    /// The start body's options (camelCase), which resume and reseed keep.
    pub request: Value,
    pub input: Value,
    pub plan: Option<Plan>,
    pub uploads: Vec<Asset>,
    pub upload_urls: Vec<String>,
    /// By plan order.
    pub steps: Vec<(String, StepState)>,
    pub events: Vec<RunEvent>,
    pub artifacts: Vec<Value>,
    pub billing_preview: Value,
    pub waiting_reason: Option<String>,
    pub error: Option<Value>,
    pub reseed: Option<Value>,
    pub resume_count: u64,
    pub last_resume_at: Option<String>,
    pub completed_at: Option<String>,
}

impl WorkflowState {
    pub fn fold(events: &[RunEvent]) -> Self {
        let mut s = Self::default();
        for e in events {
            s.apply(e);
        }
        s
    }

    pub fn next_sequence(&self) -> u64 {
        self.events.len() as u64
    }

    pub fn is_terminal(&self) -> bool {
        self.events
            .last()
            .is_some_and(|e| TERMINAL.contains(&e.kind.as_str()))
    }

    pub fn step(&self, id: &str) -> Option<&StepState> {
        self.steps.iter().find(|(s, _)| s == id).map(|(_, st)| st)
    }

    fn step_mut(&mut self, id: &str) -> Option<&mut StepState> {
        self.steps
            .iter_mut()
            .find(|(s, _)| s == id)
            .map(|(_, st)| st)
    }

    pub fn apply(&mut self, e: &RunEvent) {
        let p = &e.payload;
        let d = &p["data"];
        if let Some(status) = p["status"].as_str() {
            self.status = status.to_string();
        }
        match e.kind.as_str() {
            "workflow_started" => {
                self.id = d["workflowId"].as_str().unwrap_or_default().into();
                self.title = d["title"].as_str().map(String::from);
                self.request = d["request"].clone();
                self.input = d["input"].clone();
                self.plan = serde_json::from_value(d["plan"].clone()).ok();
                self.uploads = serde_json::from_value(d["uploads"].clone()).unwrap_or_default();
                self.upload_urls =
                    serde_json::from_value(d["uploadUrls"].clone()).unwrap_or_default();
                self.billing_preview = d["billingPreview"].clone();
                self.reseed = d.get("reseed").cloned();
                self.steps = self
                    .plan
                    .iter()
                    .flat_map(|p| &p.steps)
                    .map(|s| {
                        let st = StepState {
                            status: "queued".into(),
                            ..StepState::default()
                        };
                        (s.id.clone(), st)
                    })
                    .collect();
            }
            "workflow_waiting_for_user" => {
                self.waiting_reason = d["reason"].as_str().map(String::from);
            }
            "workflow_progress" => {
                self.waiting_reason = None;
                if d["recovered"] == true {
                    self.resume_count += 1;
                    self.last_resume_at = Some(e.at.clone());
                }
                if d["resumed"] == true {
                    self.resume_count += 1;
                    self.last_resume_at = Some(e.at.clone());
                    self.error = None;
                    self.completed_at = None;
                    for (_, st) in &mut self.steps {
                        if matches!(st.status.as_str(), "failed" | "cancelled" | "skipped") {
                            st.status = "queued".into();
                            st.error = None;
                        }
                    }
                }
            }
            "step_started" => {
                let at = e.at.clone();
                if let Some(st) = self.step_mut(d["stepId"].as_str().unwrap_or_default()) {
                    st.status = "running".into();
                    st.job_id = d["jobId"].as_str().map(String::from);
                    st.attempt = d["attempt"].as_u64().unwrap_or(1) as u32;
                    st.tool = d["toolName"].as_str().map(String::from);
                    st.arguments = Some(d["arguments"].clone());
                    st.started_at = Some(at);
                }
            }
            "step_completed" => {
                let at = e.at.clone();
                if let Some(st) = self.step_mut(d["stepId"].as_str().unwrap_or_default()) {
                    st.status = "completed".into();
                    st.artifacts = d["artifacts"].as_array().cloned().unwrap_or_default();
                    st.assets = serde_json::from_value(d["assets"].clone()).unwrap_or_default();
                    st.completed_at = Some(at);
                }
            }
            "step_failed" => {
                let at = e.at.clone();
                if let Some(st) = self.step_mut(d["stepId"].as_str().unwrap_or_default()) {
                    st.status = if d["retrying"] == true {
                        "queued"
                    } else if d["skipped"] == true {
                        "skipped"
                    } else {
                        "failed"
                    }
                    .into();
                    st.error = Some(d["error"].clone());
                    st.completed_at = Some(at);
                }
            }
            "artifact_created" => self.artifacts.push(d["artifact"].clone()),
            "workflow_cancelled" => {
                for (_, st) in &mut self.steps {
                    if matches!(st.status.as_str(), "running" | "queued") {
                        st.status = "cancelled".into();
                    }
                }
                self.completed_at = Some(e.at.clone());
            }
            "workflow_failed" => {
                self.error = Some(d["error"].clone());
                self.completed_at = Some(e.at.clone());
            }
            "workflow_completed" => self.completed_at = Some(e.at.clone()),
            _ => {}
        }
        self.events.push(e.clone());
    }

    /// Whether a step's last attempt started and never ended (its front died): it runs again
    /// under the same job id, which finds the job it started.
    pub fn interrupted(&self, id: &str) -> bool {
        self.step(id).is_some_and(|s| s.status == "running")
    }

    /// The record of contract §4, with the lease if a front executes it.
    pub fn record(&self, lease: Option<&Lease>) -> Value {
        let created = self
            .events
            .first()
            .map(|e| e.at.clone())
            .unwrap_or_default();
        let updated = self.events.last().map(|e| e.at.clone()).unwrap_or_default();
        let ms = |s: &str| parse_iso(s).unwrap_or(0);
        let plan_steps = self
            .plan
            .as_ref()
            .map_or(Value::Null, |p| p.to_json()["steps"].clone());
        let steps: Vec<Value> = self
            .plan
            .iter()
            .flat_map(|p| &p.steps)
            .map(|s| {
                let st = self.step(&s.id).cloned().unwrap_or_default();
                json!({
                    "id": s.id, "sequence": s.sequence, "toolName": s.tool_name,
                    "status": st.status, "jobId": st.job_id, "attempt": st.attempt,
                    "arguments": st.arguments.unwrap_or_else(|| Value::Object(s.arguments.clone())),
                    "dependsOn": s.depends_on, "artifacts": st.artifacts, "error": st.error,
                    "startedAt": st.started_at, "completedAt": st.completed_at,
                })
            })
            .collect();
        let lease = lease.map(|l| {
            json!({
                "leaseId": l.lease_id, "ownerId": l.owner_id,
                "acquiredAt": crate::runs::event::iso(l.acquired_at),
                "heartbeatAt": crate::runs::event::iso(l.heartbeat_at),
                "expiresAt": crate::runs::event::iso(l.expires_at),
            })
        });
        let mut recovery = json!({"resumeCount": self.resume_count});
        if let Some(at) = &self.last_resume_at {
            recovery["lastResumeAt"] = json!(at);
        }
        let mut timestamps = json!({"createdAt": created, "updatedAt": updated});
        if let Some(at) = &self.completed_at {
            timestamps["completedAt"] = json!(at);
        }
        let events: Vec<Value> = self.events.iter().map(|e| wire(&self.id, e)).collect();
        let mut r = json!({
            "workflowId": self.id,
            "status": self.status,
            "awaitingCostApproval": self.waiting_reason.as_deref() == Some("cost_approval_required"),
            "safeContentFilter": self.request["safeContentFilter"].as_bool().unwrap_or(true),
            "input": self.input,
            "plan": {
                "backbone": {"schemaVersion": SCHEMA_VERSION, "modelKnowledgeVersion": SCHEMA_VERSION, "routingPolicyVersion": SCHEMA_VERSION},
                "steps": plan_steps,
                "lease": lease,
                "recovery": recovery,
                "quality": {"postflightAudits": []},
                "timestamps": timestamps,
            },
            "steps": steps,
            "events": events,
            "artifacts": self.artifacts,
            "billingPreview": self.billing_preview,
            "billingPreviews": [self.billing_preview],
            "createTime": ms(&created), "updateTime": ms(&updated),
            "createdAt": created, "updatedAt": updated,
        });
        for (k, v) in [
            ("title", self.title.clone().map(Value::from)),
            (
                "waitingReason",
                self.waiting_reason.clone().map(Value::from),
            ),
            ("error", self.error.clone()),
            ("reseed", self.reseed.clone()),
            ("templateId", self.request.get("workflowId").cloned()),
        ] {
            if let Some(v) = v.filter(|v| !v.is_null()) {
                r[k] = v;
            }
        }
        r
    }
}

/// An event as the wire shows it (`{id, workflowId, sequence, timestamp, type, status?,
/// message?, data?}`).
pub fn wire(workflow_id: &str, e: &RunEvent) -> Value {
    let mut w = json!({
        "id": format!("{workflow_id}:{}", e.sequence),
        "workflowId": workflow_id,
        "sequence": e.sequence,
        "timestamp": e.at,
        "type": e.kind,
    });
    for k in ["status", "message", "data"] {
        if let Some(v) = e.payload.get(k).filter(|v| !v.is_null()) {
            w[k] = v.clone();
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, kind: &str, payload: Value) -> RunEvent {
        let mut e = RunEvent::new(kind, payload);
        e.sequence = seq;
        e
    }

    #[test]
    fn steps_fold_through_cancel_and_resume() {
        let plan = json!({"steps": [
            {"id": "a", "sequence": 0, "toolName": "generate_image", "arguments": {"prompt": "x"}, "dependsOn": []},
            {"id": "b", "sequence": 1, "toolName": "generate_image", "arguments": {"prompt": "y"}, "dependsOn": []},
        ]});
        let events = [
            event(
                0,
                "workflow_started",
                json!({"status": "queued", "data": {"workflowId": "wf_1", "plan": plan, "request": {}}}),
            ),
            event(
                1,
                "workflow_progress",
                json!({"status": "running", "data": {}}),
            ),
            event(
                2,
                "step_started",
                json!({"data": {"stepId": "a", "jobId": "wf_1-a-a1", "attempt": 1, "arguments": {"prompt": "x"}}}),
            ),
            event(
                3,
                "step_started",
                json!({"data": {"stepId": "b", "jobId": "wf_1-b-a1", "attempt": 1, "arguments": {"prompt": "y"}}}),
            ),
            event(
                4,
                "step_completed",
                json!({"data": {"stepId": "a", "artifacts": [{"url": "u"}], "assets": []}}),
            ),
        ];
        let mut s = WorkflowState::fold(&events);
        assert_eq!(s.status, "running");
        assert!(s.interrupted("b") && !s.interrupted("a"));
        s.apply(&event(
            5,
            "workflow_cancelled",
            json!({"status": "cancelled", "data": {"reason": "user"}}),
        ));
        assert!(s.is_terminal());
        assert_eq!(s.step("b").map(|b| b.status.as_str()), Some("cancelled"));
        s.apply(&event(
            6,
            "workflow_progress",
            json!({"status": "running", "data": {"resumed": true}}),
        ));
        assert!(!s.is_terminal());
        assert_eq!(s.step("a").map(|b| b.status.as_str()), Some("completed"));
        assert_eq!(
            s.step("b").map(|b| (b.status.as_str(), b.attempt)),
            Some(("queued", 1))
        );
        let r = s.record(None);
        assert_eq!(r["status"], "running");
        assert_eq!(r["plan"]["recovery"]["resumeCount"], 1);
        assert_eq!(r["events"][4]["id"], "wf_1:4");
        assert_eq!(r["steps"][0]["artifacts"][0]["url"], "u");
        assert_eq!(r["safeContentFilter"], true);
    }
}
