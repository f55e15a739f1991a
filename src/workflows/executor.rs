//! The executor of one workflow, on the front that holds its lease (the same lease, log,
//! cancel relay and adoption as chat runs: [`crate::runs::upkeep`] drives both). It starts
//! every step whose inputs are ready, independent steps together, each a media call on the
//! pool through the [`ToolExecutorActor`] like any hosted tool call; it writes
//! `step_started` (with the job id) before dispatching and `step_completed` with the
//! outputs after, and ends the workflow when no step can run.
//!
//! A step whose `step_started` has no end in the log (its front died) runs again under the
//! same job id: the ledger replays its hold and the media worker finds the backend job the
//! first attempt started, so no step's media job runs twice. A step that failed or was
//! cancelled runs again, on resume, as a new attempt with a new job id.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc::unbounded_channel;
use tokio::sync::watch;

use super::bind::bind;
use super::interactive;
use super::plan::Step;
use super::state::WorkflowState;
use crate::api::chat_request::TokenChoice;
use crate::billing::accounts::Presented;
use crate::protocol::media::Asset;
use crate::runs::event::RunEvent;
use crate::runs::log::{LogError, RunMeta};
use crate::runs::{blocking, Runs, Signal, Stop};
use crate::session::Services;
use crate::tools::call;
use crate::tools::catalog::catalog;
use crate::tools::executor::{MediaCall, ToolExecutorActor};
use crate::tools::results::ToolError;
use crate::tools::tool_loop::unit_price;

/// Executes workflow `id`, whose lease this front holds; `resumed` says why when it adopts
/// one another front left. Returns at once.
pub fn execute(services: Arc<Services>, id: String, resumed: Option<String>) {
    let runs = Arc::clone(&services.runs);
    let Some(signal) = runs.register(&id) else {
        return;
    };
    actix::spawn(async move {
        match Executor::load(Arc::clone(&services), &id, signal).await {
            Ok(mut x) => x.run(resumed).await,
            Err(e) => tracing::error!(workflow = %id, error = %e, "loading a workflow to execute"),
        }
        runs.unregister(&id);
    });
}

struct Executor {
    services: Arc<Services>,
    meta: RunMeta,
    key: Presented,
    state: WorkflowState,
    signal: watch::Receiver<Signal>,
    /// The steps this executor dispatched (a step running in the log that it did not
    /// dispatch was left by an executor that stopped).
    dispatched: HashSet<String>,
}

/// What a finished step call brings back.
struct Finished {
    step: String,
    tool: String,
    outcome: Result<Vec<Asset>, ToolError>,
}

impl Executor {
    async fn load(
        services: Arc<Services>,
        id: &str,
        signal: watch::Receiver<Signal>,
    ) -> Result<Self, LogError> {
        let (log, run) = (Arc::clone(&services.runs.log), id.to_string());
        let (meta, events) = blocking(move || Ok((log.meta(&run)?, log.read(&run, None)?))).await?;
        let meta = meta.ok_or_else(|| LogError::NoRun(id.to_string()))?;
        Ok(Self {
            key: meta.key(),
            meta,
            state: WorkflowState::fold(&events),
            services,
            signal,
            dispatched: HashSet::new(),
        })
    }

    fn runs(&self) -> &Runs {
        &self.services.runs
    }

    async fn append(&mut self, events: Vec<(&str, Value)>) -> Result<(), Stop> {
        if events.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(events.len());
        for (i, (kind, payload)) in events.into_iter().enumerate() {
            let mut e = RunEvent::new(kind, payload);
            e.sequence = self.state.next_sequence() + i as u64;
            out.push(e);
        }
        let (log, run, owner, batch) = (
            Arc::clone(&self.runs().log),
            self.meta.run_id.clone(),
            self.runs().owner.clone(),
            out.clone(),
        );
        blocking(move || log.append(&run, &owner, &batch)).await?;
        for e in &out {
            self.state.apply(e);
        }
        Ok(())
    }

    fn check(&self) -> Result<(), Stop> {
        Stop::check(&self.signal)
    }

    async fn run(&mut self, resumed: Option<String>) {
        let stop = match self.steps(resumed).await {
            Ok(()) | Err(Stop::Parked) => None,
            Err(Stop::Lost) => {
                tracing::warn!(workflow = %self.meta.run_id, "stopped executing a workflow another front took over");
                None
            }
            Err(Stop::Cancelled(reason)) => Some((
                "workflow_cancelled",
                json!({"status": "cancelled", "message": reason, "data": {"reason": reason}}),
            )),
            Err(Stop::Failed(why)) => Some((
                "workflow_failed",
                json!({"status": "failed", "message": why, "data": {"error": {"message": why}}}),
            )),
        };
        if let Some(last) = stop {
            if let Err(e) = self.end(vec![last]).await {
                tracing::warn!(workflow = %self.meta.run_id, "ending a workflow: {}", describe(&e));
            }
        }
    }

    /// Appends the last events and retires the workflow.
    async fn end(&mut self, last: Vec<(&str, Value)>) -> Result<(), Stop> {
        self.append(last).await?;
        let (log, run, owner) = (
            Arc::clone(&self.runs().log),
            self.meta.run_id.clone(),
            self.runs().owner.clone(),
        );
        let now = crate::clock::unix_ms();
        blocking(move || log.retire(&run, &owner, now)).await?;
        Ok(())
    }

    async fn steps(&mut self, resumed: Option<String>) -> Result<(), Stop> {
        if self.state.is_terminal() {
            return Ok(());
        }
        if let Some(reason) = self.runs().cancel_requested(&self.meta.run_id).await {
            return Err(Stop::Cancelled(reason));
        }
        if self.state.waiting_reason.is_some() {
            return Err(Stop::Parked);
        }
        let progress = match resumed {
            Some(reason) => {
                let count = self.state.resume_count + 1;
                Some(
                    json!({"status": "running", "message": "Resumed on another front",
                    "data": {"recovered": true, "reason": reason, "resumeCount": count}}),
                )
            }
            None if self.state.status == "queued" => {
                Some(json!({"status": "running", "message": "Running", "data": {}}))
            }
            None => None,
        };
        if let Some(p) = progress {
            self.append(vec![("workflow_progress", p)]).await?;
        }
        let plan = self
            .state
            .plan
            .clone()
            .ok_or_else(|| Stop::Failed("the workflow has no plan".into()))?;
        let (progress, mut heard) = unbounded_channel();
        let mut running = FuturesUnordered::new();
        let mut reported: HashMap<String, (&'static str, f32)> = HashMap::new();
        loop {
            self.check()?;
            self.skip_blocked(&plan.steps).await?;
            for step in self.ready(&plan.steps) {
                match self.start_step(&step).await? {
                    Ok(call) => {
                        let (id, tool) = (step.id.clone(), call.tool.clone());
                        let rx = ToolExecutorActor::run(
                            Arc::clone(&self.services),
                            call,
                            progress.clone(),
                        );
                        running.push(async move {
                            let outcome = rx.await.unwrap_or_else(|_| {
                                Err(ToolError::new(
                                    "MODEL_UNAVAILABLE",
                                    "the call was lost",
                                    true,
                                ))
                            });
                            Finished {
                                step: id,
                                tool,
                                outcome,
                            }
                        });
                    }
                    Err(e) => self.step_failed(&step, e).await?,
                }
            }
            if running.is_empty() {
                return self.finish().await;
            }
            let mut signal = self.signal.clone();
            tokio::select! {
                Some(done) = running.next() => {
                    let Some(step) = plan.steps.iter().find(|s| s.id == done.step) else {
                        continue;
                    };
                    match done.outcome {
                        Err(e) => self.step_failed(step, e).await?,
                        Ok(assets) => self.finished(step, &done.tool, assets).await?,
                    }
                }
                Some(p) = heard.recv() => {
                    // A step's progress, when its status changes or it moves a quarter on.
                    let last = reported.get(&p.call_id).copied();
                    if last.is_none_or(|(s, f)| s != p.status || p.progress - f >= 0.25) {
                        reported.insert(p.call_id.clone(), (p.status, p.progress));
                        self.append(vec![("workflow_progress", json!({
                            "status": "running",
                            "message": format!("Step `{}` {}", p.call_id, p.status.replace('_', " ")),
                            "data": {"stepId": p.call_id, "toolName": p.tool, "stepStatus": p.status, "progress": p.progress},
                        }))]).await?;
                    }
                }
                _ = signal.changed() => self.check()?,
            }
        }
    }

    fn token_choice(&self) -> TokenChoice {
        match self.state.request["tokenType"].as_str() {
            Some("sogni") => TokenChoice::Sogni,
            Some("spark") => TokenChoice::Spark,
            _ => TokenChoice::Auto,
        }
    }

    /// Queued steps whose every source completed, no more of a group than its concurrency
    /// allows beside those running.
    fn ready(&self, steps: &[Step]) -> Vec<Step> {
        let mut running: HashMap<&str, usize> = HashMap::new();
        for s in steps {
            let busy = self
                .state
                .step(&s.id)
                .is_some_and(|st| st.status == "running");
            if let (Some(g), true) = (&s.group, busy) {
                *running.entry(g.name.as_str()).or_default() += 1;
            }
        }
        let mut out = Vec::new();
        for s in steps {
            let runnable = self.state.step(&s.id).is_some_and(|st| {
                st.status == "queued" || st.status == "running" && !self.dispatched.contains(&s.id)
            });
            let inputs_ready = s.depends_on.iter().all(|b| {
                b.source_step_id == super::plan::INPUT_MEDIA
                    || self.state.step(&b.source_step_id).is_some_and(|st| {
                        st.status == "completed"
                            || !b.required && matches!(st.status.as_str(), "failed" | "skipped")
                    })
            });
            if !runnable || !inputs_ready {
                continue;
            }
            if let Some(g) = &s.group {
                let n = running.entry(g.name.as_str()).or_default();
                if *n >= g.concurrency {
                    continue;
                }
                *n += 1;
            }
            out.push(s.clone());
        }
        out
    }

    /// Marks failed the queued steps a failed required source leaves without input.
    async fn skip_blocked(&mut self, steps: &[Step]) -> Result<(), Stop> {
        loop {
            let blocked = steps.iter().find_map(|s| {
                let queued = self
                    .state
                    .step(&s.id)
                    .is_some_and(|st| st.status == "queued");
                let dead = s.depends_on.iter().find(|b| {
                    b.required
                        && self
                            .state
                            .step(&b.source_step_id)
                            .is_some_and(|st| matches!(st.status.as_str(), "failed" | "skipped"))
                })?;
                queued.then(|| (s.id.clone(), dead.source_step_id.clone()))
            });
            let Some((step, source)) = blocked else {
                return Ok(());
            };
            let e = ToolError::new(
                "DEPENDENCY_FAILED",
                format!("step `{source}`, whose output this step needs, failed"),
                false,
            );
            self.append(vec![failed(&step, &e, true)]).await?;
        }
    }

    /// Binds and prepares a step (an interactive one's model writes its call first), writes
    /// `step_started`, and returns the call to dispatch (or why it cannot run).
    async fn start_step(&mut self, step: &Step) -> Result<Result<MediaCall, ToolError>, Stop> {
        let interrupted = self.state.interrupted(&step.id);
        let st = self.state.step(&step.id).cloned().unwrap_or_default();
        let attempt = if interrupted {
            st.attempt.max(1)
        } else {
            st.attempt + 1
        };
        let job_id = format!("{}-{}-a{attempt}", self.meta.run_id, step.id);
        let bound = match bind(
            step,
            &self.state,
            &self.services.media.signer,
            &self.meta.origin,
            self.seed_of(step),
        ) {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
        };
        let (tool, arguments) = match (&step.interactive, interrupted) {
            (None, _) => (step.tool_name.clone(), Value::Object(bound.arguments)),
            // The model chose before the front died: the same call again.
            (Some(_), true) => (
                st.tool.clone().unwrap_or_default(),
                st.arguments.clone().unwrap_or_default(),
            ),
            (Some(stage), false) => {
                let decided = interactive::decide(
                    &self.services,
                    &self.key,
                    step,
                    stage,
                    &bound.described,
                    format!("{job_id}-llm"),
                )
                .await;
                match decided {
                    Ok((tool, args)) => (tool, serde_json::from_str(&args).unwrap_or(Value::Null)),
                    Err(e) => return Ok(Err(e)),
                }
            }
        };
        let Some(def) = catalog().get(&tool) else {
            return Ok(Err(ToolError::new(
                "PARAMETER_INVALID",
                format!("no hosted tool `{tool}`"),
                false,
            )));
        };
        let ready = call::prepare(
            def,
            &arguments.to_string(),
            &self.meta.account_id,
            &bound.media,
            &self.services.media.assets,
            job_id.clone(),
        )
        .await;
        let ready = match ready {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        self.append(vec![(
            "step_started",
            json!({"message": format!("Step `{}` started", step.id), "data": {
                "stepId": step.id, "toolName": tool, "jobId": job_id,
                "attempt": attempt, "arguments": arguments,
            }}),
        )])
        .await?;
        self.dispatched.insert(step.id.clone());
        Ok(Ok(MediaCall {
            job_id,
            call_id: step.id.clone(),
            tool,
            key: self.key.clone(),
            choice: self.token_choice(),
            ready,
            unit_usd: unit_price(&self.services.config.tools, def),
            priority: 0,
        }))
    }

    /// The seed a reseeded workflow gives the step, if any.
    fn seed_of(&self, step: &Step) -> Option<u64> {
        self.state.reseed.as_ref()?["steps"]
            .as_array()?
            .iter()
            .find(|s| s["stepId"] == step.id.as_str())?["seed"]
            .as_u64()
    }

    /// A step's attempt failed: it fails, or it is queued again while it has attempts left.
    async fn step_failed(&mut self, step: &Step, e: ToolError) -> Result<(), Stop> {
        let attempt = self.state.step(&step.id).map_or(0, |s| s.attempt);
        let (kind, mut payload) = failed(&step.id, &e, false);
        if attempt < step.max_attempts && attempt > 0 {
            payload["data"]["retrying"] = json!(true);
            payload["message"] = json!(format!(
                "Step `{}` failed ({}); trying again",
                step.id, e.message
            ));
        }
        self.dispatched.remove(&step.id);
        self.append(vec![(kind, payload)]).await
    }

    /// A step's outputs: one `artifact_created` each, then `step_completed`.
    async fn finished(&mut self, step: &Step, tool: &str, assets: Vec<Asset>) -> Result<(), Stop> {
        let now = crate::clock::unix_secs() as u64;
        let signer = &self.services.media.signer;
        let artifacts: Vec<Value> = assets
            .iter()
            .map(|a| {
                let mut v = json!({
                    "id": a.id, "kind": a.kind.as_str(), "mediaType": a.kind.as_str(),
                    "url": signer.url(&self.meta.origin, &a.id, now),
                    "mimeType": a.mime, "sizeBytes": a.size_bytes,
                    "toolName": tool, "stepId": step.id,
                });
                if let Some(w) = a.width {
                    v["width"] = json!(w);
                }
                if let Some(h) = a.height {
                    v["height"] = json!(h);
                }
                if let Some(d) = a.duration_ms {
                    v["durationSeconds"] = json!(d as f64 / 1000.0);
                }
                v
            })
            .collect();
        let mut events: Vec<(&str, Value)> = artifacts
            .iter()
            .map(|a| {
                (
                    "artifact_created",
                    json!({"data": {"stepId": step.id, "artifact": a}}),
                )
            })
            .collect();
        events.push((
            "step_completed",
            json!({"message": format!("Step `{}` completed", step.id),
                "data": {"stepId": step.id, "artifacts": artifacts, "assets": assets}}),
        ));
        self.append(events).await
    }

    /// No step can run: the workflow ends by how its steps did.
    async fn finish(&mut self) -> Result<(), Stop> {
        let statuses: HashMap<&str, usize> =
            self.state
                .steps
                .iter()
                .fold(HashMap::new(), |mut m, (_, st)| {
                    *m.entry(st.status.as_str()).or_default() += 1;
                    m
                });
        let total = self.state.steps.len();
        let completed = statuses.get("completed").copied().unwrap_or(0);
        let last = if completed == total {
            (
                "workflow_completed",
                json!({"status": "completed", "message": "All steps completed", "data": {"completedSteps": completed}}),
            )
        } else {
            let status = if completed > 0 {
                "partial_failure"
            } else {
                "failed"
            };
            let failed: Vec<&str> = self
                .state
                .steps
                .iter()
                .filter(|(_, st)| st.status != "completed")
                .map(|(id, _)| id.as_str())
                .collect();
            let why = format!(
                "{} of {total} steps did not complete: {}",
                total - completed,
                failed.join(", ")
            );
            (
                "workflow_failed",
                json!({"status": status, "message": why, "data": {"error": {"message": why, "failedSteps": failed}}}),
            )
        };
        self.end(vec![last]).await
    }
}

fn failed(step: &str, e: &ToolError, skipped: bool) -> (&'static str, Value) {
    (
        "step_failed",
        json!({"message": format!("Step `{step}` failed: {}", e.message), "data": {
            "stepId": step, "skipped": skipped,
            "error": {"code": e.error_type, "message": e.message, "retryable": e.retryable},
        }}),
    )
}

fn describe(s: &Stop) -> String {
    match s {
        Stop::Parked => "parked".into(),
        Stop::Lost => "another front took it over".into(),
        Stop::Cancelled(r) => format!("cancelled: {r}"),
        Stop::Failed(w) => w.clone(),
    }
}
