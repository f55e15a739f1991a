//! From a validated chat request to work for the engine: the messages rendered through the
//! model's own chat template (tools described as [`super::tool_prompt`] says) and tokenized,
//! the grammar the output must follow ([`super::grammar`], compiled here once so a schema
//! llguidance cannot use is a 400), and the sampling fields filled from the task profile's
//! preset and clamped to the model tier's limits, so no client can ask for more than its
//! tier allows.
//!
//! Presets, used for each sampling field the request leaves out:
//!
//! | profile     | temperature | top_p | top_k |
//! |-------------|-------------|-------|-------|
//! | `general`   | 0.7         | 0.8   | 20    |
//! | `coding`    | 0.2         | 0.95  | 20    |
//! | `reasoning` | 0.6         | 0.95  | 20    |

use serde_json::Value;

use super::grammar::{grammar, Thinking};
use super::tool_prompt::conversation;
use crate::api::chat_request::{image_marker, ChatRequest, Role, TaskProfile};
use crate::api::error::ApiError;
use crate::api::tools::ResponseFormat;
pub use crate::config::TierLimits;
use crate::engine::generate::GenerateParams;
use crate::engine::sampler::SamplerParams;
use crate::engine::template::ChatTemplate;
use crate::engine::tokenizer::Tokenizer;
use crate::engine::vision::{self, tower::VisionConfig};
use crate::protocol::images::PromptImage;
use crate::protocol::job::ImageRunSpec;

/// A request made ready for a worker.
#[derive(Debug, Clone)]
pub struct PreparedPrompt {
    pub prompt_ids: Vec<u32>,
    /// The prompt's images for the worker; their rows are placeholders in `prompt_ids`.
    pub images: Vec<PromptImage>,
    pub params: GenerateParams,
    pub task_profile: TaskProfile,
    /// How to read the output: whether `<tool_call>` blocks are calls, and whether it starts
    /// inside a `<think>` block.
    pub tools: bool,
    pub thinking: bool,
}

/// The model's side of preparing: how it renders and tokenizes (and compiles grammars).
pub struct ModelText<'a> {
    pub template: &'a ChatTemplate,
    pub tokenizer: &'a Tokenizer,
    pub context_length: usize,
    pub id: &'a str,
    /// The vision tower's settings, when the model reads images.
    pub vision: Option<&'a VisionConfig>,
}

/// Renders, tokenizes, builds the grammar and fills and clamps the sampling fields. Fails
/// with a 400 when the prompt leaves no room in the model's context or a schema cannot be
/// used.
pub fn prepare(
    req: &ChatRequest,
    model: &ModelText,
    limits: &TierLimits,
) -> Result<PreparedPrompt, ApiError> {
    let (template, tok, context_length) = (model.template, model.tokenizer, model.context_length);
    let n_images: usize = req.messages.iter().map(|m| m.images.len()).sum();
    if n_images > 0 && model.vision.is_none() {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "model `{}` has no vision tower, so it cannot read images; send text only or choose a vision model",
                model.id
            ),
        ));
    }
    // Client strings are defanged first, so only the template's markup (and the tool
    // prompt's) can produce control tokens.
    let (messages, tools) = conversation(&defanged(req, tok), template);
    let rendered = template
        .render(&messages, tools.as_ref(), true, &req.chat_template_kwargs)
        .map_err(|e| {
            ApiError::invalid(
                "messages",
                format!("the chat template rejected the messages: {e}"),
            )
        })?;
    // A prompt too long for the context by its length alone is refused before the
    // (seconds-long, for megabytes) tokenizing.
    let at_least = tok.min_tokens(&rendered);
    if at_least >= context_length {
        return Err(too_long(at_least, context_length, "at least "));
    }
    let thinking_off = req.chat_template_kwargs.get("enable_thinking") == Some(&false.into());
    let thinking = if rendered.trim_end().ends_with("<think>") {
        Thinking::Open
    } else if template.handles_thinking && !thinking_off {
        Thinking::Optional
    } else {
        Thinking::Off
    };
    let grammar = grammar(req, thinking);
    if let Some(g) = &grammar {
        model
            .tokenizer
            .grammars()
            .and_then(|gs| gs.check(g))
            .map_err(|e| {
                ApiError::invalid(
                    grammar_param(req),
                    format!("this schema cannot constrain the output: {e}"),
                )
            })?;
    }
    let (prompt_ids, images) = match model.vision {
        Some(vision) if n_images > 0 => with_images(req, &rendered, tok, vision)?,
        _ => (
            tok.encode_chat(&rendered).map_err(|e| {
                ApiError::invalid("messages", format!("cannot tokenize the messages: {e}"))
            })?,
            Vec::new(),
        ),
    };
    let room = context_length.saturating_sub(prompt_ids.len());
    if room == 0 {
        return Err(too_long(prompt_ids.len(), context_length, ""));
    }
    let max_tokens = (req
        .max_tokens
        .unwrap_or(limits.default_max_tokens)
        .min(limits.max_tokens) as usize)
        .min(room);

    let task_profile =
        req.task_profile
            .unwrap_or(if req.messages.iter().any(|m| m.role == Role::Developer) {
                TaskProfile::Coding
            } else {
                TaskProfile::General
            });
    let preset = preset(task_profile);
    let s = &req.sampling;
    let top_k = s.top_k.unwrap_or(preset.top_k);
    let top_k = if limits.max_top_k > 0 && (top_k == 0 || top_k > limits.max_top_k) {
        limits.max_top_k
    } else {
        top_k
    };
    let sampler = SamplerParams {
        temperature: s
            .temperature
            .unwrap_or(preset.temperature)
            .min(limits.max_temperature),
        top_k: top_k as usize,
        top_p: s.top_p.unwrap_or(preset.top_p),
        min_p: s.min_p.unwrap_or(0.0),
        repetition_penalty: s.repetition_penalty.unwrap_or(1.0),
        frequency_penalty: s.frequency_penalty.unwrap_or(0.0),
        presence_penalty: s.presence_penalty.unwrap_or(0.0),
        seed: s.seed.unwrap_or_else(fresh_seed),
        ..SamplerParams::default()
    };
    if let Some(&(id, _)) = req
        .logit_bias
        .iter()
        .find(|(id, _)| *id as usize >= tok.vocab_size())
    {
        return Err(ApiError::invalid(
            "logit_bias",
            format!(
                "token {id} is not in this model's vocabulary of {}",
                tok.vocab_size()
            ),
        ));
    }
    let tools = req.offers_tools();
    Ok(PreparedPrompt {
        prompt_ids,
        images,
        params: GenerateParams {
            max_tokens,
            sampler,
            stop: req.stop.clone(),
            grammar,
            logprobs: req.logprobs,
            logit_bias: req.logit_bias.clone(),
        },
        task_profile,
        tools,
        thinking: thinking == Thinking::Open,
    })
}

/// The rendered prompt cut at its images, tokenized around them as libmtmd lays them out
/// (each image's rows sized from its dimensions, capped at [`vision::MAX_SIDE`]), and the
/// images for the worker.
fn with_images(
    req: &ChatRequest,
    rendered: &str,
    tok: &Tokenizer,
    vision: &VisionConfig,
) -> Result<(Vec<u32>, Vec<PromptImage>), ApiError> {
    let parts: Vec<_> = req.messages.iter().flat_map(|m| &m.images).collect();
    let segments: Vec<&str> = rendered.split(image_marker()).collect();
    if segments.len() != parts.len() + 1 {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "the chat template kept {} of the {} images",
                segments.len() - 1,
                parts.len()
            ),
        ));
    }
    let shapes: Vec<_> = parts
        .iter()
        .map(|p| {
            let (w, h) = vision::preprocess::capped(p.width, p.height, vision::MAX_SIDE);
            vision::preprocess::shape(w, h, vision)
        })
        .collect();
    let mm = vision::prompt(vision, tok, &segments, &shapes)
        .map_err(|e| ApiError::invalid("messages", format!("cannot tokenize the messages: {e}")))?;
    let images = parts
        .iter()
        .enumerate()
        .map(|(i, p)| PromptImage {
            data: std::sync::Arc::clone(&p.data),
            runs: mm
                .spans
                .runs
                .iter()
                .filter(|r| r.image == i)
                .map(|r| ImageRunSpec {
                    at: r.at as u32,
                    nx: r.nx as u32,
                    ny: r.ny as u32,
                })
                .collect(),
        })
        .collect();
    Ok((mm.tokens, images))
}

/// `req` with every string the client wrote defanged ([`Tokenizer::defang`]).
fn defanged(req: &ChatRequest, tok: &Tokenizer) -> ChatRequest {
    let text = |s: &str| tok.defang(s).into_owned();
    let mut safe = req.clone();
    for m in &mut safe.messages {
        m.content = text(&m.content);
        m.name = m.name.as_deref().map(text);
        m.tool_call_id = m.tool_call_id.as_deref().map(text);
        m.reasoning_content = m.reasoning_content.as_deref().map(text);
        for c in &mut m.tool_calls {
            c.id = text(&c.id);
            c.name = text(&c.name);
            c.arguments = text(&c.arguments);
        }
    }
    for t in &mut safe.tools {
        t.description = t.description.as_deref().map(text);
        defang_value(&mut t.parameters, tok);
    }
    for v in safe.chat_template_kwargs.values_mut() {
        defang_value(v, tok);
    }
    safe
}

/// Every string in `v` (keys included) defanged. Bodies nest at most 128 deep.
fn defang_value(v: &mut Value, tok: &Tokenizer) {
    match v {
        Value::String(s) => *s = tok.defang(s).into_owned(),
        Value::Array(items) => items.iter_mut().for_each(|i| defang_value(i, tok)),
        Value::Object(obj) => {
            let entries = std::mem::take(obj);
            *obj = entries
                .into_iter()
                .map(|(k, mut v)| {
                    defang_value(&mut v, tok);
                    (tok.defang(&k).into_owned(), v)
                })
                .collect();
        }
        _ => {}
    }
}

/// 400 for a prompt of `tokens` (`at_least` when only bounded) that fills the context.
fn too_long(tokens: usize, context_length: usize, at_least: &str) -> ApiError {
    ApiError {
        code: Some("context_length_exceeded"),
        ..ApiError::invalid(
            "messages",
            format!("the prompt is {at_least}{tokens} tokens; this model's context holds {context_length}"),
        )
    }
}

/// Sampling defaults of a task profile.
struct Preset {
    temperature: f32,
    top_p: f32,
    top_k: u32,
}

fn preset(profile: TaskProfile) -> Preset {
    match profile {
        TaskProfile::General => Preset {
            temperature: 0.7,
            top_p: 0.8,
            top_k: 20,
        },
        TaskProfile::Coding => Preset {
            temperature: 0.2,
            top_p: 0.95,
            top_k: 20,
        },
        TaskProfile::Reasoning => Preset {
            temperature: 0.6,
            top_p: 0.95,
            top_k: 20,
        },
    }
}

/// The request field a grammar that does not compile came from.
fn grammar_param(req: &ChatRequest) -> &'static str {
    match req.response_format {
        ResponseFormat::JsonSchema { .. } if !req.offers_tools() => {
            "response_format.json_schema.schema"
        }
        _ => "tools",
    }
}

/// A seed for a request that names none: different per request, as OpenAI's are.
fn fresh_seed() -> u64 {
    let mut b = [0u8; 8];
    match getrandom::fill(&mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => crate::clock::unix_nanos() as u64,
    }
}
