//! The hosted tool loop of one `/v1/chat/completions` request. Each round is a session turn
//! (held, placed, streamed and settled like any other); a round that ends in calls to
//! hosted tools runs them (in parallel, each on a [`ToolExecutorActor`] or, for a
//! composition tool, as a constrained sub-generation), gives the model their results as
//! `tool` messages, and runs the next round. A round that calls a custom tool ends the loop
//! with `finish_reason: "tool_calls"` and those calls (the round's hosted calls still run).
//! After `tools.max_rounds` rounds of calls one more round must answer in text, and the
//! answer says the limit was reached.
//!
//! The front sees the loop as one session: content deltas of every round, progress of each
//! hosted call, then the request's [`HostedOutcome`] and one `Done` with the usage of all
//! rounds (each round's own bill is settled by its turn). Dropping the receiver cancels the
//! running round and every running media job.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::call;
use super::catalog::{catalog, Kind, ToolDef, Unit};
use super::composition;
use super::executor::{MediaCall, ToolExecutorActor};
use super::media_context::MediaContext;
use super::results::{workflow_record, CallResult, HostedOutcome, Made, ToolError};
use crate::api::chat_request::{Message, Role, TokenChoice};
use crate::api::chat_response::{AssistantMessage, Delta, Usage};
use crate::api::error::ApiError;
use crate::api::tools::{ToolCall, ToolChoice};
use crate::engine::generate::FinishReason;
use crate::media::store::NewAsset;
use crate::money::Amount;
use crate::protocol::media::MediaKind;
use crate::session::actor::{SessionActor, SessionEvent, Turn};
use crate::session::inbox::Arrival;
use crate::session::prompt::{prepare, PreparedPrompt};
use crate::session::Services;

/// Starts the loop for `turn`, whose first round's prompt is `prompt`; media URLs are made
/// under `origin`.
pub fn start(
    services: Arc<Services>,
    turn: Turn,
    prompt: PreparedPrompt,
    origin: String,
) -> UnboundedReceiver<SessionEvent> {
    let (out, rx) = unbounded_channel();
    actix::spawn(async move {
        let mut l = Loop {
            services,
            turn,
            origin,
            out,
            media: MediaContext::default(),
            usage: Usage {
                prompt_tokens: 0,
                completion_tokens: 0,
            },
            calls: Vec::new(),
            started: false,
        };
        if let Err(e) = l.run(prompt).await {
            l.send(SessionEvent::Error(e));
        }
    });
    rx
}

struct Loop {
    services: Arc<Services>,
    turn: Turn,
    origin: String,
    out: UnboundedSender<SessionEvent>,
    media: MediaContext,
    usage: Usage,
    /// Every hosted call so far, and its `sogni_tool_results` element (URLs signed once).
    calls: Vec<(CallResult, Value)>,
    started: bool,
}

/// How a round ended.
struct Round {
    finish: FinishReason,
    message: AssistantMessage,
}

impl Loop {
    fn send(&self, e: SessionEvent) {
        let _ = self.out.send(e);
    }

    async fn run(&mut self, mut prompt: PreparedPrompt) -> Result<(), ApiError> {
        self.store_uploads().await?;
        let max_rounds = self.services.config.tools.max_rounds;
        let base_id = self.turn.job_id.clone();
        for round in 0..=max_rounds {
            let Some(r) = self.round(round, &base_id, prompt).await? else {
                return Ok(());
            };
            if r.message.tool_calls.is_empty() {
                if round == max_rounds && round > 0 {
                    let note = format!(
                        "\n\n(Stopped calling tools: this request reached its limit of {max_rounds} tool rounds.)"
                    );
                    self.send(SessionEvent::Delta(Delta::Content(note), Arrival::now()));
                }
                return self.done(r.finish, false).await;
            }
            let offered = &self.turn.request.hosted.offered;
            let (hosted, custom): (Vec<ToolCall>, Vec<ToolCall>) = r
                .message
                .tool_calls
                .into_iter()
                .partition(|c| offered.contains(&c.name));
            let results = self.run_calls(round, &base_id, &hosted).await?;
            if !custom.is_empty() {
                for (index, c) in custom.iter().enumerate() {
                    self.send(SessionEvent::Delta(
                        Delta::ToolCall {
                            index,
                            id: c.id.clone(),
                            name: c.name.clone(),
                        },
                        Arrival::now(),
                    ));
                    self.send(SessionEvent::Delta(
                        Delta::Arguments {
                            index,
                            fragment: c.arguments.clone(),
                        },
                        Arrival::now(),
                    ));
                }
                return self.done(FinishReason::Stop, true).await;
            }
            let request = &mut self.turn.request;
            request.messages.push(Message {
                role: Role::Assistant,
                content: r.message.content.clone(),
                name: None,
                tool_call_id: None,
                tool_calls: hosted.clone(),
                reasoning_content: Some(r.message.reasoning.clone()).filter(|r| !r.is_empty()),
                images: Vec::new(),
            });
            for (c, result) in hosted.iter().zip(results) {
                request.messages.push(Message {
                    role: Role::Tool,
                    content: result.to_string(),
                    name: None,
                    tool_call_id: Some(c.id.clone()),
                    tool_calls: Vec::new(),
                    reasoning_content: None,
                    images: Vec::new(),
                });
            }
            // A forced call is made once; the last round answers in text.
            request.tool_choice = if round + 1 == max_rounds {
                Some(ToolChoice::None)
            } else {
                Some(ToolChoice::Auto)
            };
            prompt = self.prepare().await?;
        }
        Ok(())
    }

    /// `media_references`, stored as the account's uploads.
    async fn store_uploads(&mut self) -> Result<(), ApiError> {
        let uploads = std::mem::take(&mut self.turn.request.hosted.uploads);
        for u in uploads {
            let asset = self
                .services
                .media
                .assets
                .save(NewAsset {
                    account_id: self.turn.key.record.account_id.clone(),
                    kind: u.kind,
                    mime: u.mime,
                    bytes: u.bytes,
                    width: u.width,
                    height: u.height,
                    duration_ms: None,
                })
                .await
                .map_err(|e| ApiError::logged("storing a media reference", e))?;
            self.media.upload(asset);
        }
        Ok(())
    }

    async fn prepare(&self) -> Result<PreparedPrompt, ApiError> {
        let (request, model) = (self.turn.request.clone(), Arc::clone(&self.turn.model));
        self.services
            .preparer
            .run(move || prepare(&request, &model.text(), &model.tier.limits()))
            .await
    }

    /// One round: its text goes to the client as it comes, its calls are collected. `None`
    /// when the loop is over (an error was sent, or the client left).
    async fn round(
        &mut self,
        round: u32,
        base_id: &str,
        prompt: PreparedPrompt,
    ) -> Result<Option<Round>, ApiError> {
        let mut turn = self.turn.clone();
        if round > 0 {
            turn.job_id = format!("{base_id}-r{round}");
        }
        let mut events = SessionActor::start_turn(Arc::clone(&self.services), turn, prompt);
        let mut message = AssistantMessage::default();
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                () = self.out.closed() => return Ok(None),
            };
            match event {
                Some(SessionEvent::Started) => {
                    if !std::mem::replace(&mut self.started, true) {
                        self.send(SessionEvent::Started);
                    }
                }
                Some(SessionEvent::Delta(d, arrival)) => match d {
                    Delta::ToolCall { .. } | Delta::Arguments { .. } => message.apply(d),
                    d => {
                        message.apply(d.clone());
                        self.send(SessionEvent::Delta(d, arrival));
                    }
                },
                Some(SessionEvent::Done { finish, usage, .. }) => {
                    self.usage.prompt_tokens += usage.prompt_tokens;
                    self.usage.completion_tokens += usage.completion_tokens;
                    return Ok(Some(Round { finish, message }));
                }
                Some(SessionEvent::Error(e)) => return Err(e),
                Some(other) => self.send(other),
                None => return Err(ApiError::logged("a tool round", "ended without a result")),
            }
        }
    }

    /// Runs a round's hosted calls together, relaying their progress; returns each one's
    /// result as the model will read it.
    async fn run_calls(
        &mut self,
        round: u32,
        base_id: &str,
        calls: &[ToolCall],
    ) -> Result<Vec<Value>, ApiError> {
        let (progress, mut heard) = unbounded_channel();
        let done = {
            let runs = calls.iter().enumerate().map(|(i, c)| {
                let job_id = format!("{base_id}-t{round}-{i}");
                run_call(
                    &self.services,
                    &self.turn,
                    &self.media,
                    c,
                    job_id,
                    progress.clone(),
                )
            });
            let all = futures_util::future::join_all(runs);
            drop(progress);
            tokio::pin!(all);
            loop {
                tokio::select! {
                    r = &mut all => break r,
                    Some(p) = heard.recv() => self.send(SessionEvent::ToolProgress(p)),
                    () = self.out.closed() => return Err(ApiError::logged("the client", "went away")),
                }
            }
        };
        while let Ok(p) = heard.try_recv() {
            self.send(SessionEvent::ToolProgress(p));
        }
        let now = crate::clock::unix_secs() as u64;
        let mut results = Vec::with_capacity(done.len());
        for mut c in done {
            if let Ok(made) = &mut c.outcome {
                made.indices = self.media.add_generated(&made.assets);
                if let Some(u) = made.usage {
                    self.usage.prompt_tokens += u.prompt_tokens;
                    self.usage.completion_tokens += u.completion_tokens;
                }
            }
            let json = c.json(&self.services.media.signer, &self.origin, now);
            results.push(json.clone());
            self.calls.push((c, json));
        }
        Ok(results)
    }

    /// Ends the loop: the workflow record (when hosted calls ran), the outcome, then `Done`.
    async fn done(&mut self, finish: FinishReason, tool_calls: bool) -> Result<(), ApiError> {
        let mut outcome = HostedOutcome::default();
        if !self.calls.is_empty() {
            outcome.results = self.calls.iter().map(|(_, json)| json.clone()).collect();
            let id = format!(
                "wf_{}",
                crate::ids::random_hex(12).map_err(|e| ApiError::logged("a workflow id", e))?
            );
            let (record, reference) = workflow_record(
                &id,
                &self.turn.key.record.account_id,
                &self.calls,
                crate::clock::unix_ms(),
            );
            self.services
                .media
                .assets
                .put_json(&format!("workflows/{id}.json"), &record)
                .await
                .map_err(|e| ApiError::logged("storing the workflow record", e))?;
            outcome.workflows.push(reference);
        }
        self.send(SessionEvent::Hosted(Box::new(outcome)));
        self.send(SessionEvent::Done {
            finish,
            tool_calls,
            usage: self.usage,
        });
        Ok(())
    }
}

/// One hosted call of `turn`, start to end, under `job_id` (its idempotency key: a call run
/// again under the same id resumes the first attempt's backend job); failures are results too.
pub async fn run_call(
    services: &Arc<Services>,
    turn: &Turn,
    media: &MediaContext,
    c: &ToolCall,
    job_id: String,
    progress: UnboundedSender<super::results::ToolProgress>,
) -> CallResult {
    let result = |outcome| CallResult {
        call_id: c.id.clone(),
        tool: c.name.clone(),
        params: serde_json::from_str(&c.arguments).unwrap_or(Value::Null),
        outcome,
    };
    let Some(def) = catalog().get(&c.name) else {
        return result(Err(ToolError::new(
            "PARAMETER_INVALID",
            format!("no hosted tool `{}`", c.name),
            false,
        )));
    };
    if def.kind == Kind::Composition {
        let r = composition::run(services, turn, def, &c.arguments, job_id).await;
        return result(r.map(|(v, usage)| Made {
            assets: Vec::new(),
            indices: Vec::new(),
            result: Some(v),
            usage: Some(usage),
        }));
    }
    let account = &turn.key.record.account_id;
    let ready = match call::prepare(
        def,
        &c.arguments,
        account,
        media,
        &services.media.assets,
        job_id.clone(),
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return result(Err(e)),
    };
    let media_call = MediaCall {
        job_id,
        call_id: c.id.clone(),
        tool: c.name.clone(),
        key: turn.key.clone(),
        choice: turn.request.token_type.unwrap_or(TokenChoice::Auto),
        ready,
        unit_usd: unit_price(&services.config.tools, def),
        priority: turn.model.tier.priority,
    };
    let rx = ToolExecutorActor::run(Arc::clone(services), media_call, progress);
    let outcome = rx.await.unwrap_or_else(|_| {
        Err(ToolError::new(
            "MODEL_UNAVAILABLE",
            "the call was lost",
            true,
        ))
    });
    result(outcome.map(|assets| Made {
        assets,
        indices: Vec::new(),
        result: None,
        usage: None,
    }))
}

/// USD per unit of `def`: its own price, else its unit's.
pub fn unit_price(config: &crate::config::ToolsConfig, def: &ToolDef) -> Amount {
    if let Some(p) = config.prices.get(&def.name) {
        return *p;
    }
    match (def.unit, def.output.map(MediaKind::from)) {
        (Some(Unit::Second), Some(MediaKind::Audio)) => config.audio_second_usd,
        (Some(Unit::Second), _) => config.video_second_usd,
        _ => config.image_usd,
    }
}
