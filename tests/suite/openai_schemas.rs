//! Our response bodies validate against OpenAI's published OpenAPI schemas, checked by the
//! Python `jsonschema` package: the model list, a model, completions (text, tool calls),
//! every kind of stream chunk, and error envelopes.

use crate::common;

use std::process::Command;

use serde_json::{json, Value};
use supernet::api::chat_response::{
    model_list, AssistantMessage, Capabilities, Choice, CompletionId, Delta, ModelObject, Pricing,
    Usage,
};
use supernet::api::error::ApiError;

#[test]
fn response_bodies_match_openais_schemas() {
    let card = ModelObject {
        id: "SmolLM2-135M-Instruct".into(),
        created: 1_700_000_000,
        owned_by: "supernet".into(),
        context_length: 8192,
        capabilities: Capabilities {
            tools: true,
            vision: false,
            reasoning: false,
        },
        pricing: Pricing {
            input: "0.3".into(),
            output: "0.9".into(),
        },
        workers: 1,
    };
    let id = CompletionId {
        id: "chatcmpl-abc".into(),
        created: 1_700_000_001,
        model: card.id.clone(),
    };
    let usage = Usage {
        prompt_tokens: 12,
        completion_tokens: 5,
    };
    let text = |t: &str| AssistantMessage {
        content: t.into(),
        ..AssistantMessage::default()
    };
    let call_start = Delta::ToolCall {
        index: 0,
        id: "call_1".into(),
        name: "get_weather".into(),
    };
    let call_args = Delta::Arguments {
        index: 0,
        fragment: "{\"city\": \"Paris\"}".into(),
    };
    let mut call = AssistantMessage {
        reasoning: "The user wants weather.".into(),
        ..AssistantMessage::default()
    };
    call.apply(call_start.clone());
    call.apply(call_args.clone());
    let entries = vec![
        json!({"token": "Par", "logprob": -0.25, "bytes": [80, 97, 114], "top_logprobs": [{"token": "Par", "logprob": -0.25, "bytes": [80, 97, 114]}]}),
    ];
    let mut with_logprobs = text("Par");
    with_logprobs.apply(Delta::Logprobs(entries.clone()));
    // What streams on the wire: the SSE event's JSON.
    let event = |d: &Delta| -> Value {
        let e = id.delta_event(1, d);
        serde_json::from_str(
            e.strip_prefix("data: ")
                .and_then(|e| e.strip_suffix("\n\n"))
                .expect("one SSE event"),
        )
        .expect("JSON")
    };
    let mut samples: Vec<(&str, Value)> = vec![
        (
            "ListModelsResponse",
            model_list(std::slice::from_ref(&card)),
        ),
        ("Model", card.json()),
        (
            "CreateChatCompletionResponse",
            id.response(
                &[Choice {
                    message: &text("Paris."),
                    finish_reason: "stop",
                }],
                usage,
            ),
        ),
        (
            "CreateChatCompletionResponse",
            id.response(
                &[Choice {
                    message: &text(""),
                    finish_reason: "length",
                }],
                usage,
            ),
        ),
        (
            "CreateChatCompletionResponse",
            id.response(
                &[
                    Choice {
                        message: &call,
                        finish_reason: "tool_calls",
                    },
                    Choice {
                        message: &with_logprobs,
                        finish_reason: "stop",
                    },
                ],
                usage,
            ),
        ),
        ("CreateChatCompletionStreamResponse", id.role_chunk(1)),
        (
            "CreateChatCompletionStreamResponse",
            event(&Delta::Content("Par".into())),
        ),
        (
            "CreateChatCompletionStreamResponse",
            event(&Delta::Reasoning("Hmm".into())),
        ),
        ("CreateChatCompletionStreamResponse", event(&call_start)),
        (
            "CreateChatCompletionStreamResponse",
            event(&Delta::Logprobs(entries.clone())),
        ),
        ("CreateChatCompletionStreamResponse", event(&call_args)),
        (
            "CreateChatCompletionStreamResponse",
            id.finish_chunk(0, "tool_calls"),
        ),
        (
            "CreateChatCompletionStreamResponse",
            id.finish_chunk(2, "stop"),
        ),
        ("CreateChatCompletionStreamResponse", id.usage_chunk(usage)),
    ];
    for e in [
        ApiError::invalid("messages[0].role", "unknown role"),
        ApiError::unauthorized("invalid API key"),
        ApiError::insufficient_balance("balance too low"),
        ApiError::model_not_found("nope"),
        ApiError::too_large(25 << 20),
        ApiError::rate_limited("slow down", 1),
        ApiError::unavailable("no worker"),
        ApiError::internal(),
    ] {
        samples.push(("ErrorResponse", e.envelope()));
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("samples.json");
    std::fs::write(&path, json!(samples).to_string()).expect("writing samples");
    let out = Command::new("python3")
        .arg(common::repo().join("tests/validate_openai_schemas.py"))
        .arg(common::reference().join("openai-chat-schemas.json"))
        .arg(&path)
        .output()
        .expect("running python3 (pip install jsonschema)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schema validation failed:\n{report}");
    assert!(
        report.contains(&format!("{} samples, 0 failures", samples.len())),
        "{report}"
    );
}
