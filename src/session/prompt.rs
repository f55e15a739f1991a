//! From a validated chat request to work for the engine: the messages rendered through the
//! model's own chat template and tokenized, and the sampling fields clamped to the model
//! tier's limits, so no client can ask for more than its tier allows.

use serde::{Deserialize, Serialize};

use crate::api::chat_request::{ChatRequest, Role, TaskProfile};
use crate::api::error::ApiError;
use crate::engine::generate::GenerateParams;
use crate::engine::sampler::SamplerParams;
use crate::engine::template::{ChatMessage, ChatTemplate};
use crate::engine::tokenizer::Tokenizer;

/// What a model tier allows; every sampling field is clamped into these bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TierLimits {
    /// Completion tokens when the request names none.
    pub default_max_tokens: u32,
    /// The most completion tokens one request may ask for.
    pub max_tokens: u32,
    pub max_temperature: f32,
    /// The largest `top_k` honoured (0 = no cap).
    pub max_top_k: u32,
}

impl Default for TierLimits {
    fn default() -> Self {
        Self { default_max_tokens: 512, max_tokens: 4096, max_temperature: 2.0, max_top_k: 0 }
    }
}

/// A request made ready for a worker.
#[derive(Debug, Clone)]
pub struct PreparedPrompt {
    pub prompt_ids: Vec<u32>,
    pub params: GenerateParams,
    pub task_profile: TaskProfile,
}

/// Renders, tokenizes and clamps. Fails with a 400 when the prompt leaves no room in the
/// model's context.
pub fn prepare(req: &ChatRequest, template: &ChatTemplate, tok: &Tokenizer, limits: &TierLimits, context_length: usize) -> Result<PreparedPrompt, ApiError> {
    let messages: Vec<ChatMessage> = req
        .messages
        .iter()
        .map(|m| ChatMessage {
            // Templates know `system`; OpenAI's `developer` is the same instruction slot.
            role: if m.role == Role::Developer { "system".into() } else { m.role.name().into() },
            content: m.content.clone(),
            name: m.name.clone(),
            tool_call_id: m.tool_call_id.clone(),
            ..ChatMessage::default()
        })
        .collect();
    let rendered = template
        .render(&messages, None, true, &req.chat_template_kwargs)
        .map_err(|e| ApiError::invalid("messages", format!("the chat template rejected the messages: {e}")))?;
    let prompt_ids = tok.encode(&rendered).map_err(|e| ApiError::invalid("messages", format!("cannot tokenize the messages: {e}")))?;
    let room = context_length.saturating_sub(prompt_ids.len());
    if room == 0 {
        return Err(ApiError::invalid(
            "messages",
            format!("the prompt is {} tokens; this model's context holds {context_length}", prompt_ids.len()),
        ));
    }
    let max_tokens = (req.max_tokens.unwrap_or(limits.default_max_tokens).min(limits.max_tokens) as usize).min(room);

    let s = &req.sampling;
    let top_k = s.top_k.unwrap_or(0);
    let top_k = if limits.max_top_k > 0 && (top_k == 0 || top_k > limits.max_top_k) { limits.max_top_k } else { top_k };
    let sampler = SamplerParams {
        // OpenAI's defaults: temperature 1 and no truncation.
        temperature: s.temperature.unwrap_or(1.0).min(limits.max_temperature),
        top_k: top_k as usize,
        top_p: s.top_p.unwrap_or(1.0),
        min_p: s.min_p.unwrap_or(0.0),
        repetition_penalty: s.repetition_penalty.unwrap_or(1.0),
        frequency_penalty: s.frequency_penalty.unwrap_or(0.0),
        presence_penalty: s.presence_penalty.unwrap_or(0.0),
        seed: s.seed.unwrap_or_else(fresh_seed),
        ..SamplerParams::default()
    };
    let task_profile = req.task_profile.unwrap_or(if req.messages.iter().any(|m| m.role == Role::Developer) {
        TaskProfile::Coding
    } else {
        TaskProfile::General
    });
    Ok(PreparedPrompt { prompt_ids, params: GenerateParams { max_tokens, sampler, stop: req.stop.clone(), grammar: None }, task_profile })
}

/// A seed for a request that names none: different per request, as OpenAI's are.
fn fresh_seed() -> u64 {
    let mut b = [0u8; 8];
    match getrandom::fill(&mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
    }
}
