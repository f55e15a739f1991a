//! The executor of one durable run, on the front that holds its lease. It rebuilds the
//! run's state from the log, then takes steps until the run ends or waits for its user:
//! an LLM round (a SessionActor turn, its text written as coalesced deltas), the hosted
//! calls that round made (each a [`run_call`] under an idempotency key recorded in
//! `tool_call_dispatched` before it runs), a cost-approval pause, or the final answer.
//!
//! Every step is a checkpoint in the log, so another front that adopts the run after this
//! one died continues from the last one: a round cut short runs again (its hold was never
//! settled, so the reaper releases it), and a call already dispatched runs again under the
//! same job id, which finds the backend job the first attempt started (and its hold)
//! instead of starting and billing another.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc::unbounded_channel;
use tokio::sync::watch;

use super::event::iso;
use super::journal::Journal;
use super::log::{LogError, RunMeta};
use super::request::chat_body;
use super::state::{RoundCall, RunState};
use super::{blocking, Runs, Signal, Stop};
use crate::api::chat_request::{ChatRequest, Message, Role};
use crate::api::chat_response::{finish_reason, AssistantMessage, Delta};
use crate::api::tools::{ToolCall, ToolChoice};
use crate::billing::accounts::Presented;
use crate::billing::limits::Permit;
use crate::session::actor::{SessionActor, SessionEvent, Turn};
use crate::session::models::ModelEntry;
use crate::session::prompt::prepare;
use crate::session::Services;
use crate::tools::call;
use crate::tools::catalog::{catalog, Kind};
use crate::tools::media_context::MediaContext;
use crate::tools::tool_loop::{run_call, unit_price};

/// Executes `run_id`, whose lease this front holds; `resumed` says why when it adopts a run
/// another executor left. Returns at once; the run goes on in the background.
pub fn execute(services: Arc<Services>, run_id: String, resumed: Option<String>) {
    let runs = Arc::clone(&services.runs);
    let Some(signal) = runs.register(&run_id) else {
        return;
    };
    actix::spawn(async move {
        let r = Executor::start(Arc::clone(&services), &run_id, signal).await;
        match r {
            Ok(mut x) => x.run(resumed).await,
            Err(e) => tracing::error!(run = %run_id, error = %e, "loading a run to execute"),
        }
        runs.unregister(&run_id);
    });
}

struct Executor {
    services: Arc<Services>,
    journal: Journal,
    meta: RunMeta,
    key: Presented,
    signal: watch::Receiver<Signal>,
}

impl Executor {
    async fn start(
        services: Arc<Services>,
        run_id: &str,
        signal: watch::Receiver<Signal>,
    ) -> Result<Self, LogError> {
        let log = Arc::clone(&services.runs.log);
        let id = run_id.to_string();
        let (meta, events) = blocking(move || Ok((log.meta(&id)?, log.read(&id, None)?))).await?;
        let meta = meta.ok_or_else(|| LogError::NoRun(run_id.to_string()))?;
        let key = meta.key();
        let journal = Journal::new(
            Arc::clone(&services.runs.log),
            services.runs.owner.clone(),
            RunState::fold(&events),
        );
        Ok(Self {
            services,
            journal,
            meta,
            key,
            signal,
        })
    }

    fn runs(&self) -> &Runs {
        &self.services.runs
    }

    async fn run(&mut self, resumed: Option<String>) {
        let outcome = self.steps(resumed).await;
        let stop = match outcome {
            Ok(()) | Err(Stop::Parked) => None,
            Err(Stop::Lost) => {
                tracing::warn!(run = %self.meta.run_id, "stopped executing a run another front took over");
                None
            }
            Err(Stop::Cancelled(reason)) => Some(("run_cancelled", json!({"reason": reason}))),
            Err(Stop::Failed(why)) => Some(("run_failed", json!({"failureReason": why}))),
        };
        if let Some((kind, payload)) = stop {
            if let Err(e) = self.journal.append(vec![(kind, payload)]).await {
                tracing::warn!(run = %self.meta.run_id, error = %e, "ending a run");
                return;
            }
            self.ended().await;
        }
    }

    /// The run is over: its lease and place among active runs go, its retention starts.
    async fn ended(&self) {
        let (log, run, owner) = (
            Arc::clone(&self.runs().log),
            self.meta.run_id.clone(),
            self.runs().owner.clone(),
        );
        let now = crate::clock::unix_ms();
        let r = blocking(move || log.retire(&run, &owner, now)).await;
        if let Err(e) = r {
            tracing::warn!(run = %self.meta.run_id, error = %e, "retiring an ended run");
        }
    }

    fn check(&self) -> Result<(), Stop> {
        Stop::check(&self.signal)
    }

    async fn steps(&mut self, resumed: Option<String>) -> Result<(), Stop> {
        let s = &self.journal.state;
        if s.is_terminal() {
            return Ok(());
        }
        if let Some(reason) = self.runs().cancel_requested(&self.meta.run_id).await {
            return Err(Stop::Cancelled(reason));
        }
        if s.waiting.is_some() {
            return Err(Stop::Parked);
        }
        let started = s.events.iter().any(|e| e.kind == "run_started");
        match resumed {
            Some(reason) if started => {
                let count = s.resume_count + 1;
                self.journal
                    .append(vec![(
                        "run_resumed",
                        json!({"reason": reason, "resumeCount": count}),
                    )])
                    .await?
            }
            _ if !started => {
                self.journal
                    .append(vec![("run_started", json!({}))])
                    .await?
            }
            _ => {}
        }
        let model = self.model().await?;
        let mut request = self.chat_request(&model).await?;
        loop {
            self.check()?;
            let state = &self.journal.state;
            let unresolved = state.unresolved_calls();
            if !unresolved.is_empty() {
                self.calls(&request, &model, unresolved).await?;
                continue;
            }
            let next = match &state.last_round {
                None => 0,
                Some(r) if r.calls.is_empty() || r.calls.iter().any(|c| !c.hosted) => {
                    return self.finish().await
                }
                Some(r) if r.round >= self.services.config.tools.max_rounds => {
                    return self.finish().await
                }
                Some(r) => r.round + 1,
            };
            self.round(&mut request, &model, next).await?;
        }
    }

    /// The run's model; a front that just started may not know it yet, so it is waited for.
    async fn model(&self) -> Result<Arc<ModelEntry>, Stop> {
        let wanted = self.journal.state.request["model"]
            .as_str()
            .map(String::from);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let models = &self.services.models;
            let m = match &wanted {
                Some(id) => models.get(id),
                None => models.default_model(),
            };
            if let Some(m) = m {
                return Ok(m);
            }
            if Instant::now() > deadline {
                return Err(Stop::Failed(match wanted {
                    Some(id) => format!("The model `{id}` is not served"),
                    None => "This server serves no model".into(),
                }));
            }
            self.check()?;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The chat request the rounds are made from.
    async fn chat_request(&self, model: &Arc<ModelEntry>) -> Result<ChatRequest, Stop> {
        let body = chat_body(&self.journal.state.request);
        let pipelines = self.services.media_pipelines().await;
        let mut r =
            ChatRequest::parse_offering(&body, &pipelines).map_err(|e| Stop::Failed(e.message))?;
        if r.model.is_none() {
            r.model = Some(model.id.clone());
        }
        Ok(r)
    }

    /// A permit of the key's limits, waited for while they are reached.
    async fn permit(&self) -> Result<Permit, Stop> {
        loop {
            match self
                .services
                .billing
                .admit(&self.key.record, self.services.config.limits)
            {
                Ok(p) => return Ok(p),
                Err(l) => {
                    self.check()?;
                    tokio::time::sleep(Duration::from_secs(l.retry_after_secs.clamp(1, 10))).await;
                }
            }
        }
    }

    fn turn(
        &self,
        job_id: String,
        model: &Arc<ModelEntry>,
        request: ChatRequest,
        permit: Arc<Permit>,
    ) -> Turn {
        Turn {
            job_id,
            key: self.key.clone(),
            model: Arc::clone(model),
            request,
            permit,
            bills_prompt: true,
            span: tracing::info_span!("run", run = %self.meta.run_id),
            arrived: Instant::now(),
        }
    }

    /// One LLM round: `round_request` is the base request with the conversation so far.
    async fn round(
        &mut self,
        base: &mut ChatRequest,
        model: &Arc<ModelEntry>,
        round: u32,
    ) -> Result<(), Stop> {
        let mut request = base.clone();
        request
            .messages
            .extend(self.journal.state.turns.iter().map(message_of));
        let max_rounds = self.services.config.tools.max_rounds;
        if round > 0 {
            request.tool_choice = Some(if round >= max_rounds {
                ToolChoice::None
            } else {
                ToolChoice::Auto
            });
        }
        let prepared = {
            let (r, m) = (request.clone(), Arc::clone(model));
            self.services
                .preparer
                .run(move || prepare(&r, &m.text(), &m.tier.limits()))
                .await
                .map_err(|e| Stop::Failed(e.message))?
        };
        let permit = self.permit().await?;
        let job_id = format!(
            "{}-r{round}-a{}",
            self.meta.run_id, self.journal.state.resume_count
        );
        self.journal
            .append(vec![("llm_round_started", json!({"round": round}))])
            .await?;
        let turn = self.turn(job_id, model, request, Arc::new(permit));
        let mut events = SessionActor::start_turn(Arc::clone(&self.services), turn, prepared);
        let mut message = AssistantMessage::default();
        let mut signal = self.signal.clone();
        let (finish, tool_calls, usage) = loop {
            let due = self.journal.delta_due();
            let event = tokio::select! {
                e = events.recv() => e,
                _ = signal.changed() => {
                    self.check()?;
                    continue;
                }
                () = sleep_until(due) => {
                    self.journal.flush().await?;
                    continue;
                }
            };
            match event {
                Some(SessionEvent::Delta(d, _)) => {
                    if let Delta::Content(t) = &d {
                        self.journal.text(round, t);
                    }
                    message.apply(d);
                }
                Some(SessionEvent::Done {
                    finish,
                    tool_calls,
                    usage,
                }) => break (finish, tool_calls, usage),
                Some(SessionEvent::Error(e)) => return Err(Stop::Failed(e.message)),
                Some(_) => {}
                None => return Err(Stop::Failed("the LLM round ended without a result".into())),
            }
        };
        let offered = &base.hosted.offered;
        let calls: Vec<Value> = message
            .tool_calls
            .iter()
            .map(|c| json!({"id": c.id, "name": c.name, "arguments": c.arguments, "hosted": offered.contains(&c.name)}))
            .collect();
        let mut events = vec![(
            "llm_round_completed",
            json!({
                "round": round,
                "content": message.content,
                "toolCalls": calls,
                "finishReason": finish_reason(finish, tool_calls),
                "usage": {"promptTokens": usage.prompt_tokens, "completionTokens": usage.completion_tokens},
            }),
        )];
        for c in message
            .tool_calls
            .iter()
            .filter(|c| offered.contains(&c.name))
        {
            let arguments: Value =
                serde_json::from_str(&c.arguments).unwrap_or(Value::String(c.arguments.clone()));
            events.push((
                "tool_call_proposed",
                json!({"toolCallId": c.id, "toolName": c.name, "arguments": arguments, "round": round}),
            ));
        }
        self.journal.append(events).await?;
        Ok(())
    }

    /// The media context of the run so far: its uploads and every output, in log order.
    fn media(&self) -> MediaContext {
        let s = &self.journal.state;
        let mut m = MediaContext::default();
        for a in &s.uploads {
            m.upload(a.clone());
        }
        m.add_generated(&s.generated);
        m
    }

    /// The last round's unresolved hosted calls: priced, paused for approval when the run
    /// asks for it, else dispatched and run together.
    async fn calls(
        &mut self,
        base: &ChatRequest,
        model: &Arc<ModelEntry>,
        calls: Vec<RoundCall>,
    ) -> Result<(), Stop> {
        let round = self
            .journal
            .state
            .last_round
            .as_ref()
            .map_or(0, |r| r.round);
        let media = self.media();
        let mut priced = Vec::new();
        for (i, c) in calls.iter().enumerate() {
            let job_id = format!("{}-t{round}-{i}", self.meta.run_id);
            let usd = self.estimate(c, &media, &job_id).await;
            priced.push((c.clone(), job_id, usd));
        }
        let pause = self.needs_approval(&priced);
        if !pause.is_empty() {
            return self.pause(&pause).await;
        }
        let mut dispatch = Vec::new();
        for (c, job_id, usd) in &priced {
            let state = self.journal.state.calls.get(&c.id);
            if state.and_then(|s| s.job_id.as_ref()).is_none() {
                dispatch.push((
                    "tool_call_dispatched",
                    json!({"toolCallId": c.id, "toolName": c.name, "jobId": job_id, "estimatedUsdCost": usd}),
                ));
            }
        }
        self.journal.append(dispatch).await?;
        let permit = Arc::new(self.permit().await?);
        let (progress, mut heard) = unbounded_channel();
        let mut running = FuturesUnordered::new();
        for (c, _, _) in &priced {
            let job_id = self
                .journal
                .state
                .calls
                .get(&c.id)
                .and_then(|s| s.job_id.clone())
                .unwrap_or_default();
            let turn = self.turn(job_id.clone(), model, base.clone(), Arc::clone(&permit));
            let (services, media, progress) =
                (Arc::clone(&self.services), media.clone(), progress.clone());
            let call = ToolCall {
                id: c.id.clone(),
                name: c.name.clone(),
                arguments: c.arguments.clone(),
            };
            running.push(async move {
                run_call(&services, &turn, &media, &call, job_id, progress).await
            });
        }
        drop(progress);
        let mut media = media;
        let mut signal = self.signal.clone();
        let mut last_progress: std::collections::HashMap<String, (&'static str, f32)> =
            Default::default();
        while !running.is_empty() {
            tokio::select! {
                Some(done) = running.next() => {
                    let mut done = done;
                    let mut assets = Vec::new();
                    if let Ok(made) = &mut done.outcome {
                        made.indices = media.add_generated(&made.assets);
                        assets = made.assets.clone();
                    }
                    let now = crate::clock::unix_secs() as u64;
                    let result = done.json(&self.services.media.signer, &self.meta.origin, now);
                    let urls = result["output_assets"].as_array().cloned().unwrap_or_default();
                    let mut events = Vec::new();
                    for (a, u) in assets.iter().zip(&urls) {
                        events.push(("artifact_created", json!({
                            "id": a.id, "artifactId": a.id, "toolCallId": done.call_id, "toolName": done.tool,
                            "url": u["url"], "mediaType": a.kind.as_str(),
                        })));
                    }
                    let media_urls: Vec<Value> = assets.iter().zip(&urls)
                        .map(|(a, u)| json!({"url": u["url"], "mediaType": a.kind.as_str(), "toolName": done.tool}))
                        .collect();
                    events.push(("tool_call_resolved", json!({
                        "toolCallId": done.call_id, "toolName": done.tool,
                        "status": if done.outcome.is_ok() { "ok" } else { "err" },
                        "result": result, "assets": assets, "mediaUrls": media_urls,
                    })));
                    self.journal.append(events).await?;
                }
                Some(p) = heard.recv() => {
                    let seen = last_progress.insert(p.call_id.clone(), (p.status, p.progress));
                    let worth = seen.is_none_or(|(s, f)| s != p.status || p.progress - f >= 0.05);
                    if worth {
                        self.journal.append(vec![("tool_call_progress", json!({
                            "toolCallId": p.call_id, "toolName": p.tool, "status": p.status, "progress": p.progress,
                        }))]).await?;
                    }
                }
                _ = signal.changed() => self.check()?,
            }
        }
        Ok(())
    }

    /// A media call's price in USD (0 for tools that are not media jobs, or calls that
    /// will fail their checks anyway).
    async fn estimate(&self, c: &RoundCall, media: &MediaContext, job_id: &str) -> f64 {
        let Some(def) = catalog().get(&c.name).filter(|d| d.kind == Kind::Media) else {
            return 0.0;
        };
        let ready = call::prepare(
            def,
            &c.arguments,
            &self.meta.account_id,
            media,
            &self.services.media.assets,
            job_id.to_string(),
        )
        .await;
        match ready {
            Ok(r) => unit_price(&self.services.config.tools, def).to_f64() * r.units as f64,
            Err(_) => 0.0,
        }
    }

    /// The calls of `priced` the run must ask its user about before dispatching.
    fn needs_approval(&self, priced: &[(RoundCall, String, f64)]) -> Vec<(RoundCall, f64)> {
        let s = &self.journal.state;
        let r = &s.request;
        let undecided: Vec<(RoundCall, f64)> = priced
            .iter()
            .filter(|(c, _, usd)| {
                *usd > 0.0
                    && s.calls
                        .get(&c.id)
                        .is_none_or(|st| !st.approved && st.job_id.is_none())
            })
            .map(|(c, _, usd)| (c.clone(), *usd))
            .collect();
        let rc = &r["runtimeConfig"];
        let threshold = rc["jobConfirmationThresholdUsd"].as_f64().unwrap_or(0.0);
        let each = rc["requireJobConfirmation"].as_bool().unwrap_or(false);
        let unit = self.runs().config.capacity_unit_usd.to_f64();
        let over_ceiling = r["maxEstimatedCapacityUnits"].as_f64().is_some_and(|max| {
            let total: f64 = undecided.iter().map(|(_, u)| u).sum::<f64>() + s.spent_estimate_usd;
            total / unit > max + 1e-9 && r["confirmCost"].as_bool() != Some(true)
        });
        undecided
            .into_iter()
            .filter(|(_, usd)| over_ceiling || (each && *usd > threshold))
            .collect()
    }

    /// Pauses the run for its user's approval of `calls`.
    async fn pause(&mut self, calls: &[(RoundCall, f64)]) -> Result<(), Stop> {
        let unit = self.runs().config.capacity_unit_usd.to_f64();
        let units = |usd: f64| (usd / unit * 100.0).round() / 100.0;
        let token = match self.journal.state.request["tokenType"].as_str() {
            Some("sogni") => "sogni",
            _ => "spark",
        };
        let total: f64 = calls.iter().map(|(_, u)| u).sum();
        let until = crate::clock::unix_ms() + self.runs().config.approval_secs * 1000;
        let preview = json!({
            "totalEstimatedCapacityUnits": units(total),
            "tokenType": token,
            "validityUntil": iso(until),
            "perToolBreakdown": calls.iter().map(|(c, u)| json!({"toolCallId": c.id, "toolName": c.name, "capacityUnits": units(*u)})).collect::<Vec<_>>(),
        });
        let (first, usd) = &calls[0];
        let ids: Vec<&str> = calls.iter().map(|(c, _)| c.id.as_str()).collect();
        let args: Value = serde_json::from_str(&first.arguments).unwrap_or(Value::Null);
        self.journal
            .append(vec![
                (
                    "run_awaiting_cost_confirmation",
                    json!({
                        "toolCallId": first.id, "toolName": first.name, "estimatedCost": units(*usd),
                        "tokenType": token, "estimatedUsdCost": usd, "toolArgs": args,
                    }),
                ),
                (
                    "run_waiting_for_user",
                    json!({
                        "reason": "cost_approval_required",
                        "message": format!("Approve about {:.2} capacity units (${total:.2}) of media generation to continue", units(total)),
                        "details": {"toolCallId": first.id, "pendingToolCallIds": ids, "costApprovalPreview": preview},
                    }),
                ),
            ])
            .await?;
        let (log, run, owner) = (
            Arc::clone(&self.runs().log),
            self.meta.run_id.clone(),
            self.runs().owner.clone(),
        );
        blocking(move || log.park(&run, &owner)).await?;
        Err(Stop::Parked)
    }

    /// The final answer: the last round's text (and its client-side calls, if it made any).
    async fn finish(&mut self) -> Result<(), Stop> {
        let Some(last) = self.journal.state.last_round.clone() else {
            return Err(Stop::Failed("the run ended without a round".into()));
        };
        let custom: Vec<Value> = last
            .calls
            .iter()
            .filter(|c| !c.hosted)
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect();
        let mut content = last.content.clone();
        if last.round >= self.services.config.tools.max_rounds
            && last.round > 0
            && custom.is_empty()
        {
            content.push_str(&format!(
                "\n\n(Stopped calling tools: this run reached its limit of {} tool rounds.)",
                self.services.config.tools.max_rounds
            ));
        }
        let mut final_response = json!({
            "content": content,
            "finishReason": if custom.is_empty() { last.finish.as_str() } else { "tool_calls" },
        });
        if !custom.is_empty() {
            final_response["pendingToolCalls"] = custom.into();
        }
        let (p, c) = self.journal.state.usage;
        self.journal
            .append(vec![
                ("assistant_message_completed", json!({"content": content})),
                (
                    "run_completed",
                    json!({"finalResponse": final_response, "usage": {"promptTokens": p, "completionTokens": c}}),
                ),
            ])
            .await?;
        self.ended().await;
        Ok(())
    }
}

/// A conversation entry of the state as a chat message.
fn message_of(v: &Value) -> Message {
    let role = match v["role"].as_str() {
        Some("tool") => Role::Tool,
        _ => Role::Assistant,
    };
    Message {
        role,
        content: v["content"].as_str().unwrap_or_default().to_string(),
        name: None,
        reasoning_content: None,
        images: Vec::new(),
        tool_call_id: v["tool_call_id"].as_str().map(String::from),
        tool_calls: v["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| ToolCall {
                id: c["id"].as_str().unwrap_or_default().into(),
                name: c["function"]["name"].as_str().unwrap_or_default().into(),
                arguments: c["function"]["arguments"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
            })
            .collect(),
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
