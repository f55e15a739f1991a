//! Response bodies in OpenAI's exact shapes: chat completions, stream chunks, the model
//! list, and SSE framing. Fields OpenAI's clients read as always present (`logprobs`,
//! `refusal`, `finish_reason` on every chunk) are always written, `null` when empty.

use serde::Serialize;
use serde_json::{json, Value};

use super::tools::ToolCall;
use crate::engine::generate::{FinishReason, TokenLogprob};
use crate::engine::tokenizer::Tokenizer;

/// Token counts of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

impl Usage {
    fn json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
}

/// A piece of the assistant's message as it streams.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    Content(String),
    /// What the model wrote inside `<think>...</think>`.
    Reasoning(String),
    /// A call begins: its position among the calls, its id and the function's name.
    ToolCall {
        index: usize,
        id: String,
        name: String,
    },
    /// More of call `index`'s arguments (a JSON text, in pieces).
    Arguments {
        index: usize,
        fragment: String,
    },
    /// `logprobs.content` entries of the tokens produced since the last ones.
    Logprobs(Vec<Value>),
}

/// The whole message, assembled from its deltas.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AssistantMessage {
    pub content: String,
    pub reasoning: String,
    pub tool_calls: Vec<ToolCall>,
    /// `logprobs.content`, when the request asked for log-probabilities.
    pub logprobs: Option<Vec<Value>>,
}

/// One choice of a response: its message and `finish_reason`.
pub struct Choice<'a> {
    pub message: &'a AssistantMessage,
    pub finish_reason: &'static str,
}

/// A token's entry in `logprobs.content`, in OpenAI's shape; minus infinity (a token the
/// grammar forbids) is written as OpenAI writes it, -9999.
pub fn logprob_entry(tok: &Tokenizer, lp: &TokenLogprob) -> Value {
    let entry = |id: u32, logprob: f32| {
        let bytes = tok.piece(id);
        json!({
            "token": String::from_utf8_lossy(bytes),
            "logprob": logprob.max(-9999.0),
            "bytes": bytes,
        })
    };
    let mut e = entry(lp.token, lp.logprob);
    e["top_logprobs"] = lp.top.iter().map(|&(id, l)| entry(id, l)).collect();
    e
}

/// The `logprobs` object of a choice or chunk.
fn logprobs_json(entries: &[Value]) -> Value {
    json!({ "content": entries, "refusal": null })
}

impl AssistantMessage {
    pub fn apply(&mut self, d: Delta) {
        match d {
            Delta::Content(t) => self.content.push_str(&t),
            Delta::Reasoning(t) => self.reasoning.push_str(&t),
            Delta::ToolCall { id, name, .. } => self.tool_calls.push(ToolCall {
                id,
                name,
                arguments: String::new(),
            }),
            Delta::Arguments { index, fragment } => {
                if let Some(c) = self.tool_calls.get_mut(index) {
                    c.arguments.push_str(&fragment);
                }
            }
            Delta::Logprobs(entries) => self.logprobs.get_or_insert_default().extend(entries),
        }
    }

    fn json(&self) -> Value {
        // OpenAI sends `content: null` beside calls when there is no text.
        let content = if self.content.is_empty() && !self.tool_calls.is_empty() {
            Value::Null
        } else {
            self.content.clone().into()
        };
        let mut m = json!({ "role": "assistant", "content": content, "refusal": null });
        if !self.tool_calls.is_empty() {
            m["tool_calls"] = self.tool_calls.iter().map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}})).collect();
        }
        if !self.reasoning.is_empty() {
            m["reasoning_content"] = self.reasoning.clone().into();
        }
        m
    }
}

/// What identifies one completion across its response or chunks.
#[derive(Debug, Clone)]
pub struct CompletionId {
    pub id: String,
    pub created: i64,
    pub model: String,
}

impl CompletionId {
    /// The non-streaming response.
    pub fn response(&self, choices: &[Choice], usage: Usage) -> Value {
        let choices: Vec<Value> = choices
            .iter()
            .enumerate()
            .map(|(index, c)| {
                json!({
                    "index": index,
                    "message": c.message.json(),
                    "logprobs": c.message.logprobs.as_deref().map(logprobs_json),
                    "finish_reason": c.finish_reason,
                })
            })
            .collect();
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage.json(),
        })
    }

    fn chunk(&self, index: usize, delta: Value, finish_reason: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": index, "delta": delta, "logprobs": null, "finish_reason": finish_reason }],
        })
    }

    /// The first chunk of choice `index`: the assistant role, no text yet.
    pub fn role_chunk(&self, index: usize) -> Value {
        self.chunk(index, json!({ "role": "assistant", "content": "" }), None)
    }

    /// The SSE event of one delta of choice `index`. This runs for every token streamed, so
    /// it is written straight from the borrowed text, with no JSON tree in between.
    pub fn delta_event(&self, index: usize, d: &Delta) -> String {
        let event = |delta| self.event(index, delta, None);
        match d {
            Delta::Content(t) => self.event(
                index,
                TextDelta {
                    content: Some(t),
                    reasoning_content: None,
                },
                None,
            ),
            Delta::Reasoning(t) => self.event(
                index,
                TextDelta {
                    content: None,
                    reasoning_content: Some(t),
                },
                None,
            ),
            Delta::ToolCall {
                index: call,
                id,
                name,
            } => event(
                json!({ "tool_calls": [{ "index": call, "id": id, "type": "function", "function": { "name": name, "arguments": "" } }] }),
            ),
            Delta::Arguments {
                index: call,
                fragment,
            } => event(
                json!({ "tool_calls": [{ "index": call, "function": { "arguments": fragment } }] }),
            ),
            Delta::Logprobs(entries) => self.event(index, json!({}), Some(logprobs_json(entries))),
        }
    }

    fn event<D: Serialize>(&self, index: usize, delta: D, logprobs: Option<Value>) -> String {
        let chunk = DeltaChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: [DeltaChoice {
                index,
                delta,
                logprobs,
                finish_reason: None,
            }],
        };
        let mut out = b"data: ".to_vec();
        // Strings and numbers only: serializing cannot fail, and the output is UTF-8.
        let _ = serde_json::to_writer(&mut out, &chunk);
        out.extend_from_slice(b"\n\n");
        String::from_utf8(out).unwrap_or_default()
    }

    pub fn finish_chunk(&self, index: usize, finish_reason: &str) -> Value {
        self.chunk(index, json!({}), Some(finish_reason))
    }

    /// A chunk with no text that carries a hosted call's progress as `sogni_tool_progress`
    /// (OpenAI clients keep unknown fields and ignore them).
    pub fn progress_chunk(&self, index: usize, progress: Value) -> Value {
        let mut c = self.chunk(index, json!({}), None);
        c["sogni_tool_progress"] = progress;
        c
    }

    /// The final chunk of `stream_options.include_usage`: no choices, the usage.
    pub fn usage_chunk(&self, usage: Usage) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage.json(),
        })
    }
}

/// What `/v1/models` says about a model: OpenAI's fields and the ones users ask for.
#[derive(Debug, Clone, Serialize)]
pub struct ModelObject {
    pub id: String,
    pub created: i64,
    pub owned_by: String,
    pub context_length: usize,
    pub capabilities: Capabilities,
    /// USD per million tokens, as decimal strings.
    pub pricing: Pricing,
    /// Workers serving the model now.
    pub workers: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Capabilities {
    pub tools: bool,
    pub vision: bool,
    pub reasoning: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Pricing {
    pub input: String,
    pub output: String,
}

impl ModelObject {
    pub fn json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_else(|_| json!({}));
        v["object"] = json!("model");
        v
    }
}

pub fn model_list(cards: &[ModelObject]) -> Value {
    json!({ "object": "list", "data": cards.iter().map(ModelObject::json).collect::<Vec<_>>() })
}

/// A stream chunk with one delta (what [`CompletionId::delta_event`] writes).
#[derive(Serialize)]
struct DeltaChunk<'a, D> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: [DeltaChoice<D>; 1],
}

#[derive(Serialize)]
struct DeltaChoice<D> {
    index: usize,
    delta: D,
    logprobs: Option<Value>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct TextDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
}

/// One server-sent event carrying `v`.
pub fn sse_event(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// The event that ends every stream.
pub const SSE_DONE: &str = "data: [DONE]\n\n";

/// The `finish_reason` a client sees: a natural end of a message that made calls is
/// `tool_calls`, and a cancelled one (the client is gone) reads as `stop`.
pub fn finish_reason(f: FinishReason, tool_calls: bool) -> &'static str {
    match f {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled if tool_calls => "tool_calls",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_carry_the_always_present_fields() {
        let id = CompletionId {
            id: "chatcmpl-1".into(),
            created: 7,
            model: "m".into(),
        };
        let text = AssistantMessage {
            content: "hi".into(),
            ..Default::default()
        };
        let r = id.response(
            &[Choice {
                message: &text,
                finish_reason: "stop",
            }],
            Usage {
                prompt_tokens: 3,
                completion_tokens: 1,
            },
        );
        assert_eq!(r["choices"][0]["message"]["refusal"], Value::Null);
        assert!(r["choices"][0]["message"].get("tool_calls").is_none());
        assert_eq!(r["choices"][0]["logprobs"], Value::Null);
        assert_eq!(r["usage"]["total_tokens"], 4);
        let chunk = |d: Delta| -> Value {
            let event = id.delta_event(0, &d);
            serde_json::from_str(
                event
                    .strip_prefix("data: ")
                    .and_then(|e| e.strip_suffix("\n\n"))
                    .expect("one SSE event"),
            )
            .expect("JSON")
        };
        let with = |delta: Value| json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "m", "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]});
        assert_eq!(
            chunk(Delta::Content("a\"\n".into())),
            with(json!({"content": "a\"\n"}))
        );
        assert_eq!(
            chunk(Delta::Reasoning("r".into())),
            with(json!({"reasoning_content": "r"}))
        );
        assert_eq!(
            chunk(Delta::Arguments {
                index: 1,
                fragment: "{".into()
            }),
            with(json!({"tool_calls": [{"index": 1, "function": {"arguments": "{"}}]}))
        );
        let mut call = AssistantMessage::default();
        call.apply(Delta::ToolCall {
            index: 0,
            id: "call_1".into(),
            name: "f".into(),
        });
        call.apply(Delta::Arguments {
            index: 0,
            fragment: "{}".into(),
        });
        let m = &id.response(
            &[Choice {
                message: &call,
                finish_reason: "tool_calls",
            }],
            Usage {
                prompt_tokens: 1,
                completion_tokens: 1,
            },
        )["choices"][0]["message"];
        assert_eq!(
            (&m["content"], &m["tool_calls"][0]["function"]["arguments"]),
            (&Value::Null, &json!("{}"))
        );
        assert_eq!(
            id.usage_chunk(Usage {
                prompt_tokens: 1,
                completion_tokens: 2
            })["choices"],
            json!([])
        );
        let entries =
            vec![json!({"token": "a", "logprob": -0.5, "bytes": [97], "top_logprobs": []})];
        assert_eq!(
            chunk(Delta::Logprobs(entries.clone()))["choices"][0]["logprobs"],
            json!({"content": entries, "refusal": null})
        );
        assert_eq!(sse_event(&json!({"a": 1})), "data: {\"a\":1}\n\n");
    }
}
