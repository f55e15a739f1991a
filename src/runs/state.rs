//! A run's state as a fold over its event log. The executor keeps one and applies each event
//! it appends (so after a crash the next executor rebuilds exactly the same state from the
//! log), and the snapshot that `GET /v1/chat/runs/:id` returns is [`RunState::snapshot`] of
//! the same fold: nothing about a run lives only in memory.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Map, Value};

use super::event::{parse_iso, RunEvent};
use crate::protocol::media::{Asset, MediaKind};

/// `schemaVersion` of the snapshots we write (the contract's).
pub const SCHEMA_VERSION: &str = "2026-05-14.1";

/// A call a round made.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
    /// Run on the server (a hosted tool offered to the round), or returned to the client.
    pub hosted: bool,
}

/// The last LLM round that completed.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletedRound {
    pub round: u32,
    pub content: String,
    pub calls: Vec<RoundCall>,
    pub finish: String,
}

/// Where one hosted call of the last round stands.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CallState {
    /// The job id it was dispatched under (its idempotency key), once dispatched.
    pub job_id: Option<String>,
    /// The result the model reads, once resolved.
    pub result: Option<Value>,
    pub approved: bool,
    /// The call's estimated price in USD, once priced.
    pub estimate_usd: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct RunState {
    pub run_id: String,
    pub status: String,
    /// The create request as the snapshot shows it (camelCase).
    pub request: Value,
    pub scope: Value,
    pub events: Vec<RunEvent>,
    /// The conversation after the request's messages: completed rounds with hosted calls,
    /// and their results (OpenAI message shape).
    pub turns: Vec<Value>,
    pub last_round: Option<CompletedRound>,
    /// The round started and not completed (its text so far).
    pub open_round: Option<(u32, String)>,
    pub calls: HashMap<String, CallState>,
    pub tool_calls: Vec<Value>,
    pub tool_results: Vec<Value>,
    pub artifacts: Vec<Value>,
    pub uploads: Vec<Asset>,
    pub generated: Vec<Asset>,
    /// Media URLs per kind, generated then uploaded, for `mediaContext`.
    media_urls: [Vec<String>; 3],
    upload_urls: [Vec<String>; 3],
    pub waiting: Option<Value>,
    pub billing_previews: Vec<Value>,
    /// USD of every hosted call approved or run so far.
    pub spent_estimate_usd: f64,
    pub final_response: Option<Value>,
    pub failure_reason: Option<String>,
    pub cancellation_reason: Option<String>,
    pub usage: (u64, u64),
    pub resume_count: u64,
    pub last_resume_at: Option<String>,
    pub last_recovered_at: Option<String>,
    pub resume_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub completed_at: Option<String>,
}

fn slot(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Image => 0,
        MediaKind::Video => 1,
        MediaKind::Audio => 2,
    }
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

impl RunState {
    /// The state after `events`, in order.
    pub fn fold(events: &[RunEvent]) -> Self {
        let mut s = Self::default();
        for e in events {
            s.apply(e);
        }
        s
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self.status.as_str(),
            "completed" | "partial_failure" | "failed" | "cancelled"
        )
    }

    /// The next sequence.
    pub fn next_sequence(&self) -> u64 {
        self.events.len() as u64
    }

    /// Applies one event (the next in the log).
    pub fn apply(&mut self, e: &RunEvent) {
        let p = &e.payload;
        self.updated_at = e.at.clone();
        match e.kind.as_str() {
            "run_created" => {
                self.run_id = str_of(p, "runId");
                self.status = "queued".into();
                self.request = p.get("request").cloned().unwrap_or(Value::Null);
                self.scope = p.get("scope").cloned().unwrap_or(Value::Null);
                self.created_at = e.at.clone();
                self.uploads = serde_json::from_value(p["uploads"].clone()).unwrap_or_default();
                for (asset, url) in self
                    .uploads
                    .iter()
                    .zip(p["uploadUrls"].as_array().into_iter().flatten())
                {
                    self.upload_urls[slot(asset.kind)]
                        .push(url.as_str().unwrap_or_default().into());
                }
                // Outputs of earlier turns (`mediaContext.images` …) count as generated.
                self.generated = serde_json::from_value(p["seeded"].clone()).unwrap_or_default();
                for (asset, url) in self
                    .generated
                    .iter()
                    .zip(p["seedUrls"].as_array().into_iter().flatten())
                {
                    self.media_urls[slot(asset.kind)].push(url.as_str().unwrap_or_default().into());
                }
            }
            "run_started" => self.status = "running".into(),
            "run_resumed" => {
                self.status = "running".into();
                self.resume_count += 1;
                self.last_resume_at = Some(e.at.clone());
                self.resume_reason = p.get("reason").and_then(Value::as_str).map(String::from);
            }
            "llm_round_started" => {
                self.status = "running".into();
                let round = p["round"].as_u64().unwrap_or(0) as u32;
                self.open_round = Some((round, String::new()));
            }
            "assistant_message_delta" => {
                if let Some((_, text)) = &mut self.open_round {
                    text.push_str(p["content"].as_str().unwrap_or_default());
                }
            }
            "llm_round_completed" => self.complete_round(p),
            "tool_call_proposed" => {
                let id = str_of(p, "toolCallId");
                self.tool_calls.push(json!({
                    "toolCallId": id, "toolName": p["toolName"],
                    "arguments": p["arguments"], "sequence": e.sequence,
                }));
                self.calls.entry(id).or_default();
            }
            "tool_call_dispatched" => {
                self.status = "running".into();
                let c = self.calls.entry(str_of(p, "toolCallId")).or_default();
                c.job_id = Some(str_of(p, "jobId"));
                if let Some(usd) = p["estimatedUsdCost"].as_f64() {
                    c.estimate_usd = Some(usd);
                    self.spent_estimate_usd += usd;
                }
            }
            "artifact_created" => self.artifacts.push(p.clone()),
            "tool_call_resolved" => self.resolve_call(p, e.sequence),
            "run_waiting_for_user" => {
                self.status = "waiting_for_user".into();
                self.waiting = Some(p.clone());
                if let Some(preview) = p.pointer("/details/costApprovalPreview") {
                    self.billing_previews.push(preview.clone());
                }
                self.mark_recovered(&e.at);
            }
            "run_cost_confirmation_resolved" => {
                self.waiting = None;
                self.status = "queued".into();
                if p["decision"] == "confirm" {
                    for id in p["pendingToolCallIds"].as_array().into_iter().flatten() {
                        let c = self
                            .calls
                            .entry(id.as_str().unwrap_or_default().into())
                            .or_default();
                        c.approved = true;
                    }
                }
            }
            "run_completed" | "run_partial_failure" | "run_failed" | "run_cancelled" => {
                self.status = match e.kind.as_str() {
                    "run_completed" => "completed",
                    "run_partial_failure" => "partial_failure",
                    "run_failed" => "failed",
                    _ => "cancelled",
                }
                .into();
                self.waiting = None;
                self.final_response = p.get("finalResponse").cloned();
                self.failure_reason = p
                    .get("failureReason")
                    .and_then(Value::as_str)
                    .map(String::from);
                self.cancellation_reason =
                    p.get("reason").and_then(Value::as_str).map(String::from);
                if let Some(u) = p.get("usage") {
                    self.usage = (
                        u["promptTokens"].as_u64().unwrap_or(self.usage.0),
                        u["completionTokens"].as_u64().unwrap_or(self.usage.1),
                    );
                }
                self.completed_at = Some(e.at.clone());
                self.mark_recovered(&e.at);
            }
            _ => {}
        }
        self.events.push(e.clone());
    }

    fn mark_recovered(&mut self, at: &str) {
        if self.resume_count > 0 {
            self.last_recovered_at = Some(at.to_string());
        }
    }

    fn complete_round(&mut self, p: &Value) {
        self.open_round = None;
        let calls: Vec<RoundCall> = p["toolCalls"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| RoundCall {
                id: str_of(c, "id"),
                name: str_of(c, "name"),
                arguments: str_of(c, "arguments"),
                hosted: c["hosted"].as_bool().unwrap_or(false),
            })
            .collect();
        if let Some(u) = p.get("usage") {
            self.usage.0 += u["promptTokens"].as_u64().unwrap_or(0);
            self.usage.1 += u["completionTokens"].as_u64().unwrap_or(0);
        }
        let round = CompletedRound {
            round: p["round"].as_u64().unwrap_or(0) as u32,
            content: str_of(p, "content"),
            calls,
            finish: str_of(p, "finishReason"),
        };
        let hosted: Vec<Value> = round
            .calls
            .iter()
            .filter(|c| c.hosted)
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect();
        if !hosted.is_empty() {
            self.turns
                .push(json!({"role": "assistant", "content": round.content, "tool_calls": hosted}));
        }
        self.calls.clear();
        self.last_round = Some(round);
    }

    fn resolve_call(&mut self, p: &Value, sequence: u64) {
        let id = str_of(p, "toolCallId");
        let result = p.get("result").cloned().unwrap_or(Value::Null);
        let status = str_of(p, "status");
        let mut r = json!({"toolCallId": id, "status": status, "sequence": sequence});
        if let Some(m) = result.get("message").and_then(Value::as_str) {
            r["summary"] = m.into();
        }
        if let Some(t) = result.get("error_type") {
            r["errorCode"] = t.clone();
        }
        self.tool_results.push(r);
        let assets: Vec<Asset> = serde_json::from_value(p["assets"].clone()).unwrap_or_default();
        let urls = result["output_assets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (i, a) in assets.iter().enumerate() {
            let url = urls.get(i).map(|u| str_of(u, "url")).unwrap_or_default();
            self.media_urls[slot(a.kind)].push(url);
        }
        self.generated.extend(assets);
        self.turns
            .push(json!({"role": "tool", "tool_call_id": id, "content": result.to_string()}));
        self.calls.entry(id).or_default().result = Some(result);
    }

    /// The hosted calls of the last round not yet resolved, in call order.
    pub fn unresolved_calls(&self) -> Vec<RoundCall> {
        let Some(r) = &self.last_round else {
            return Vec::new();
        };
        r.calls
            .iter()
            .filter(|c| c.hosted)
            .filter(|c| self.calls.get(&c.id).is_none_or(|s| s.result.is_none()))
            .cloned()
            .collect()
    }

    /// The snapshot: contract §3's `run`, camelCase.
    pub fn snapshot(&self, lease: Option<&super::log::Lease>) -> Value {
        let mut media = Map::new();
        for (name, i) in [("images", 0), ("videos", 1), ("audio", 2)] {
            media.insert(name.into(), json!(self.media_urls[i]));
        }
        for (name, i) in [
            ("uploadedImages", 0),
            ("uploadedVideos", 1),
            ("uploadedAudio", 2),
        ] {
            media.insert(name.into(), json!(self.upload_urls[i]));
        }
        let mut messages: Vec<Value> = self.request["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        messages.extend(self.turns.iter().cloned());
        if let Some(content) = self.final_response.as_ref().and_then(|f| f.get("content")) {
            messages.push(json!({"role": "assistant", "content": content}));
        }
        let mut run = json!({
            "runId": self.run_id,
            "status": self.status,
            "schemaVersion": SCHEMA_VERSION,
            "scope": self.scope,
            "request": self.request,
            "messages": messages,
            "toolCalls": self.tool_calls,
            "toolResults": self.tool_results,
            "mediaContext": media,
            "childWorkflowIds": [],
            "artifacts": self.artifacts,
            "events": self.events,
            "billingPreviews": self.billing_previews,
            "usage": {"promptTokens": self.usage.0, "completionTokens": self.usage.1},
            "timestamps": {"createdAt": self.created_at, "updatedAt": self.updated_at},
        });
        let set = |run: &mut Value, k: &str, v: Option<Value>| {
            if let Some(v) = v {
                run[k] = v;
            }
        };
        set(&mut run, "finalResponse", self.final_response.clone());
        set(&mut run, "waiting", self.waiting.clone());
        set(
            &mut run,
            "billingPreview",
            self.billing_previews.last().cloned(),
        );
        set(
            &mut run,
            "failureReason",
            self.failure_reason.clone().map(Value::from),
        );
        set(
            &mut run,
            "cancellationReason",
            self.cancellation_reason.clone().map(Value::from),
        );
        set(
            &mut run["timestamps"],
            "completedAt",
            self.completed_at.clone().map(Value::from),
        );
        if let Some(l) = lease.filter(|_| !self.is_terminal()) {
            run["lease"] = json!({
                "leaseId": l.lease_id, "ownerId": l.owner_id,
                "acquiredAt": super::event::iso(l.acquired_at),
                "heartbeatAt": super::event::iso(l.heartbeat_at),
                "expiresAt": super::event::iso(l.expires_at),
            });
        }
        let mut recovery = json!({"resumeCount": self.resume_count});
        set(
            &mut recovery,
            "lastResumeAt",
            self.last_resume_at.clone().map(Value::from),
        );
        set(
            &mut recovery,
            "lastRecoveredAt",
            self.last_recovered_at.clone().map(Value::from),
        );
        set(
            &mut recovery,
            "reason",
            self.resume_reason.clone().map(Value::from),
        );
        run["recovery"] = recovery;
        run
    }

    /// The ids of calls a pause holds, and whether the pause can still be confirmed at
    /// `now_ms` with `preview` (the one it issued, echoed unchanged).
    pub fn preview_matches(&self, preview: &Value, now_ms: u64) -> Result<(), &'static str> {
        let Some(issued) = self
            .waiting
            .as_ref()
            .and_then(|w| w.pointer("/details/costApprovalPreview"))
        else {
            return Err("changed");
        };
        if !same(issued, preview) {
            return Err("changed");
        }
        let until = issued["validityUntil"]
            .as_str()
            .and_then(parse_iso)
            .unwrap_or(0);
        if until < now_ms {
            return Err("expired");
        }
        Ok(())
    }

    /// The hosted calls a cost pause holds.
    pub fn pending_approval(&self) -> BTreeSet<String> {
        self.waiting
            .as_ref()
            .and_then(|w| w.pointer("/details/pendingToolCallIds"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    }
}

/// JSON equality that reads numbers by value (`2.0` as written is `2` once a JavaScript
/// client echoes it back).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(events: &[(&str, Value)]) -> Vec<RunEvent> {
        events
            .iter()
            .enumerate()
            .map(|(i, (k, p))| {
                let mut e = RunEvent::new(k, p.clone());
                e.sequence = i as u64;
                e
            })
            .collect()
    }

    /// A run whose round 0 called one hosted tool, dispatched and not yet resolved.
    fn dispatched() -> Vec<(&'static str, Value)> {
        vec![
            (
                "run_created",
                json!({"runId": "run_1", "request": {"messages": [{"role": "user", "content": "draw"}]}}),
            ),
            ("run_started", json!({})),
            ("llm_round_started", json!({"round": 0})),
            (
                "assistant_message_delta",
                json!({"round": 0, "content": "Sure"}),
            ),
            (
                "llm_round_completed",
                json!({"round": 0, "content": "Sure", "finishReason": "tool_calls",
                "toolCalls": [{"id": "c1", "name": "sogni_generate_image", "arguments": "{}", "hosted": true}],
                "usage": {"promptTokens": 10, "completionTokens": 5}}),
            ),
            (
                "tool_call_proposed",
                json!({"toolCallId": "c1", "toolName": "sogni_generate_image", "arguments": {}}),
            ),
            (
                "tool_call_dispatched",
                json!({"toolCallId": "c1", "toolName": "sogni_generate_image", "jobId": "run_1-t0-0", "estimatedUsdCost": 0.02}),
            ),
        ]
    }

    #[test]
    fn a_dispatched_call_is_resumed_under_its_job_id() {
        let s = RunState::fold(&log(&dispatched()));
        assert_eq!(s.status, "running");
        let pending = s.unresolved_calls();
        assert_eq!(pending.len(), 1);
        assert_eq!(s.calls["c1"].job_id.as_deref(), Some("run_1-t0-0"));
        assert_eq!(s.usage, (10, 5));
        assert!((s.spent_estimate_usd - 0.02).abs() < 1e-9);
    }

    #[test]
    fn a_resolved_call_joins_the_conversation_and_the_media_context() {
        let mut events = dispatched();
        events.push(("tool_call_resolved", json!({"toolCallId": "c1", "toolName": "sogni_generate_image", "status": "ok",
            "result": {"ok": true, "output_assets": [{"url": "http://h/v1/media/a1?exp=1&sig=x"}]},
            "assets": [{"id": "a1", "account_id": "acct", "kind": "Image", "mime": "image/png", "size_bytes": 1,
                        "width": 1, "height": 1, "duration_ms": null}]})));
        events.push((
            "run_completed",
            json!({"finalResponse": {"content": "Here", "finishReason": "stop"}}),
        ));
        let s = RunState::fold(&log(&events));
        assert!(s.unresolved_calls().is_empty());
        assert_eq!(s.generated.len(), 1);
        assert_eq!(
            s.turns.len(),
            2,
            "the assistant's calls and the tool's result"
        );
        let snap = s.snapshot(None);
        assert_eq!(snap["status"], "completed");
        assert_eq!(
            snap["mediaContext"]["images"][0],
            "http://h/v1/media/a1?exp=1&sig=x"
        );
        assert_eq!(snap["messages"].as_array().map(Vec::len), Some(4));
        assert!(snap.get("lease").is_none());
    }

    #[test]
    fn previews_compare_numbers_by_value() {
        let issued = json!({"totalEstimatedCapacityUnits": 2.0, "validityUntil": "2999-01-01T00:00:00.000Z"});
        let mut s = RunState::fold(&log(&dispatched()[..1]));
        s.waiting = Some(json!({"details": {"costApprovalPreview": issued}}));
        let echoed =
            json!({"totalEstimatedCapacityUnits": 2, "validityUntil": "2999-01-01T00:00:00.000Z"});
        assert_eq!(s.preview_matches(&echoed, 0), Ok(()));
        let changed =
            json!({"totalEstimatedCapacityUnits": 1, "validityUntil": "2999-01-01T00:00:00.000Z"});
        assert_eq!(s.preview_matches(&changed, 0), Err("changed"));
        assert_eq!(s.preview_matches(&echoed, u64::MAX), Err("expired"));
    }
}
