//! The composition tools (`enhance_prompt`, `compose_script`, `compose_lyrics`,
//! `compose_instrumental`, `compose_workflow`, `compose_workflow_template`): synchronous,
//! LLM-backed. Each runs as a sub-generation on the pool, constrained to the tool's result
//! schema (the same grammar machinery as `response_format`), and is billed like any
//! completion by its own turn. Called by the model in the tool loop, or directly with
//! `POST /v1/creative-agent/tools/execute`. The planners' results are made into what the
//! workflow routes accept ([`crate::workflows::drafts`]).

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::catalog::{Kind, ToolDef};
use super::results::ToolError;
use crate::api::chat_request::ChatRequest;
use crate::api::chat_response::{AssistantMessage, Usage};
use crate::engine::generate::FinishReason;
use crate::session::actor::{SessionActor, SessionEvent, Turn};
use crate::session::prompt::prepare;
use crate::session::Services;

/// Completion tokens a composition may use.
const MAX_TOKENS: u32 = 600;

/// Runs composition tool `def` with `arguments` (JSON text) as job `job_id` of `turn`'s
/// account; returns the result object and the tokens used.
pub async fn run(
    services: &Arc<Services>,
    turn: &Turn,
    def: &ToolDef,
    arguments: &str,
    job_id: String,
) -> Result<(Value, Usage), ToolError> {
    let invalid = |m: String| ToolError::new("PARAMETER_INVALID", m, false);
    if def.kind != Kind::Composition {
        return Err(invalid(format!("`{}` is not a composition tool", def.name)));
    }
    let args: Map<String, Value> = match serde_json::from_str(arguments) {
        Ok(Value::Object(o)) => o,
        _ => return Err(invalid("the arguments must be a JSON object".into())),
    };
    def.check_names(&args).map_err(invalid)?;
    let tool_args = args.clone();
    let schema = def
        .result
        .clone()
        .unwrap_or_else(|| json!({"type": "object"}));
    let body = json!({
        "messages": [
            {"role": "system", "content": format!(
                "You are the `{}` tool: {} Answer with one JSON object that fits the schema, nothing else.",
                def.name, def.description)},
            {"role": "user", "content": Value::Object(args).to_string()},
        ],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.7,
        "sogni_tools": false,
        "response_format": {"type": "json_schema", "json_schema": {"name": def.name, "schema": schema}},
    });
    let request = ChatRequest::parse(&body)
        .map_err(|e| ToolError::new("GENERATION_FAILED", e.message, false))?;
    let model = Arc::clone(&turn.model);
    let for_prepare = request.clone();
    let prompt = services
        .preparer
        .run(move || prepare(&for_prepare, &model.text(), &model.tier.limits()))
        .await
        .map_err(|e| ToolError::new("GENERATION_FAILED", e.message, true))?;
    let sub = Turn {
        job_id,
        request,
        bills_prompt: true,
        ..turn.clone()
    };
    let mut events = SessionActor::start_turn(Arc::clone(services), sub, prompt);
    let mut message = AssistantMessage::default();
    loop {
        match events.recv().await {
            Some(SessionEvent::Delta(d, _)) => message.apply(d),
            Some(SessionEvent::Done { finish, usage, .. }) => {
                let v = parse_result(&message.content, finish)?;
                let v = match def.name.as_str() {
                    "compose_workflow" => crate::workflows::drafts::plan(services, v)?,
                    "compose_workflow_template" => {
                        crate::workflows::drafts::template_draft(&tool_args, v)?
                    }
                    _ => v,
                };
                return Ok((v, usage));
            }
            Some(SessionEvent::Error(e)) => {
                return Err(ToolError::new("MODEL_UNAVAILABLE", e.message, true))
            }
            Some(_) => {}
            None => {
                return Err(ToolError::new(
                    "MODEL_UNAVAILABLE",
                    "the generation was lost",
                    true,
                ))
            }
        }
    }
}

fn parse_result(text: &str, finish: FinishReason) -> Result<Value, ToolError> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ if finish == FinishReason::Length => Err(ToolError::new(
            "GENERATION_FAILED",
            "the result did not fit in its token budget",
            true,
        )),
        _ => Err(ToolError::new(
            "GENERATION_FAILED",
            "the model's result was not a JSON object",
            true,
        )),
    }
}
