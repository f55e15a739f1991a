//! An interactive step (a template's `interactive` stage): one LLM round, on the server's
//! default model, given the stage's system prompt, its user message and the media bound
//! into the step, that must call one of the stage's allowed tools (constrained decoding
//! guarantees a well-formed call). That call, its arguments as the model wrote them, is the
//! step's media job. The round is billed to the workflow's key like any completion.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::plan::{Interactive, Step};
use crate::api::chat_request::ChatRequest;
use crate::api::chat_response::AssistantMessage;
use crate::billing::accounts::Presented;
use crate::session::actor::{SessionActor, SessionEvent, Turn};
use crate::session::prompt::prepare;
use crate::session::Services;
use crate::tools::catalog::catalog;
use crate::tools::results::ToolError;

/// Completion tokens the round may use to write its call.
const MAX_TOKENS: u32 = 400;

fn failed(message: impl Into<String>) -> ToolError {
    ToolError::new("GENERATION_FAILED", message, true)
}

/// The call the model makes for `step`: the tool's name and its arguments (JSON text).
/// `media` describes what the step's media context holds, by index.
pub async fn decide(
    services: &Arc<Services>,
    key: &Presented,
    step: &Step,
    stage: &Interactive,
    media: &str,
    job_id: String,
) -> Result<(String, String), ToolError> {
    let model = services
        .models
        .default_model()
        .ok_or_else(|| ToolError::new("MODEL_UNAVAILABLE", "this server serves no model", true))?;
    let tools: Vec<Value> = stage
        .allowed_tools
        .iter()
        .filter_map(|t| catalog().get(t))
        .map(|d| json!({"type": "function", "function": {"name": d.name, "description": d.description, "parameters": d.parameters}}))
        .collect();
    let mut user = stage
        .user_message
        .clone()
        .unwrap_or_else(|| format!("Run the stage `{}`.", step.id));
    if !media.is_empty() {
        user.push_str("\n\n");
        user.push_str(media);
    }
    let body = json!({
        "messages": [
            {"role": "system", "content": stage.system_prompt},
            {"role": "user", "content": user},
        ],
        "tools": tools,
        "tool_choice": "required",
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "sogni_tools": false,
    });
    let request = ChatRequest::parse(&body).map_err(|e| failed(e.message))?;
    let for_prepare = (request.clone(), Arc::clone(&model));
    let prompt = services
        .preparer
        .run(move || {
            prepare(
                &for_prepare.0,
                &for_prepare.1.text(),
                &for_prepare.1.tier.limits(),
            )
        })
        .await
        .map_err(|e| failed(e.message))?;
    let permit = services
        .billing
        .admit(&key.record, services.config.limits)
        .map_err(|l| ToolError::new("RATE_LIMITED", l.message, true))?;
    let turn = Turn {
        job_id,
        key: key.clone(),
        model,
        request,
        permit: Arc::new(permit),
        bills_prompt: true,
        span: tracing::info_span!("workflow_step", step = %step.id),
        arrived: Instant::now(),
    };
    let mut events = SessionActor::start_turn(Arc::clone(services), turn, prompt);
    let mut message = AssistantMessage::default();
    loop {
        match events.recv().await {
            Some(SessionEvent::Delta(d, _)) => message.apply(d),
            Some(SessionEvent::Done { .. }) => break,
            Some(SessionEvent::Error(e)) => {
                return Err(ToolError::new("MODEL_UNAVAILABLE", e.message, true))
            }
            Some(_) => {}
            None => return Err(failed("the round was lost")),
        }
    }
    let call = message
        .tool_calls
        .into_iter()
        .find(|c| stage.allowed_tools.contains(&c.name))
        .ok_or_else(|| failed("the model called none of the stage's tools"))?;
    Ok((call.name, call.arguments))
}
