//! Constrained decoding on SmolLM2-135M, from request to parsed output without HTTP: each of
//! twenty `response_format` schemas and twenty forced function calls
//! (`tests/data/structured.json`) goes through `prepare` (tool prompt and grammar), the batch
//! scheduler (all forty at once) and the markup parser, and every answer and every call's
//! arguments validate against the schema with the `jsonschema` crate.

use crate::common;

use std::collections::HashMap;

use serde_json::{json, Value};
use supernet::api::chat_request::ChatRequest;
use supernet::api::chat_response::{AssistantMessage, Delta};
use supernet::engine::batch::{Output, Request};
use supernet::engine::generate::Resume;
use supernet::session::markup::Markup;
use supernet::session::prompt::{prepare, ModelText, TierLimits};

struct Case {
    schema: Value,
    /// The schema is a function's parameters: the output is a call to it.
    call: Option<String>,
    markup: Markup,
    message: AssistantMessage,
    finished: bool,
}

#[test]
fn every_output_validates_against_its_schema() {
    let data: Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo().join("tests/data/structured.json"))
            .expect("the schemas"),
    )
    .expect("JSON");
    let (model, tok, template, be, mut scheduler) = common::smollm2_scheduler(16);
    let text = ModelText {
        template: &template,
        tokenizer: &tok,
        context_length: model.config.context_length,
        id: "model",
        vision: None,
    };

    let mut bodies = Vec::new();
    for f in data["formats"].as_array().expect("formats") {
        let format = json!({"type": "json_schema", "json_schema": {"name": f["name"], "schema": f["schema"]}});
        bodies.push((f["schema"].clone(), None, json!({"messages": [{"role": "user", "content": f["question"]}], "response_format": format})));
    }
    for t in data["tools"].as_array().expect("tools") {
        let tool = json!({"type": "function", "function": {"name": t["name"], "description": t["description"], "parameters": t["parameters"]}});
        let choice = json!({"type": "function", "function": {"name": t["name"]}});
        let name = t["name"].as_str().expect("a name").to_string();
        bodies.push((t["parameters"].clone(), Some(name), json!({"messages": [{"role": "user", "content": t["question"]}], "tools": [tool], "tool_choice": choice})));
    }
    assert_eq!(bodies.len(), 40);

    let mut cases = HashMap::new();
    for (id, (schema, call, mut body)) in bodies.into_iter().enumerate() {
        body["temperature"] = json!(0);
        body["max_tokens"] = json!(200);
        let req = ChatRequest::parse(&body).expect("valid");
        let p = prepare(&req, &text, &TierLimits::default()).expect("prepared");
        assert!(p.params.grammar.is_some(), "constrained");
        let mut n = 0;
        let markup = Markup::new(
            p.tools,
            p.thinking,
            Box::new(move || {
                n += 1;
                format!("call_{n}")
            }),
        );
        scheduler
            .add(
                id as u64,
                Request {
                    prompt: p.prompt_ids,
                    params: p.params,
                    resume: Resume::default(),
                    images: None,
                },
            )
            .expect("queued");
        cases.insert(
            id as u64,
            Case {
                schema,
                call,
                markup,
                message: AssistantMessage::default(),
                finished: false,
            },
        );
    }
    while !scheduler.is_idle() {
        for out in scheduler.step(&be) {
            match out {
                Output::Token { id, text, .. } => {
                    let c = cases.get_mut(&id).expect("a case");
                    c.markup
                        .push(&text)
                        .into_iter()
                        .for_each(|d: Delta| c.message.apply(d));
                }
                Output::Failed { id, reason } => panic!("case {id}'s grammar failed: {reason}"),
                Output::Finished { id, finish, .. } => {
                    let c = cases.get_mut(&id).expect("a case");
                    c.markup
                        .finish()
                        .into_iter()
                        .for_each(|d| c.message.apply(d));
                    assert_eq!(
                        finish,
                        supernet::engine::generate::FinishReason::Stop,
                        "case {id} ended early: {:?}",
                        c.message
                    );
                    c.finished = true;
                }
            }
        }
    }
    for (id, c) in &cases {
        assert!(c.finished);
        let validator = jsonschema::validator_for(&c.schema).expect("a valid schema");
        let output = match &c.call {
            None => {
                assert!(c.message.tool_calls.is_empty());
                c.message.content.clone()
            }
            Some(name) => {
                assert!(
                    c.message.content.is_empty(),
                    "case {id}: no text beside a forced call: {:?}",
                    c.message.content
                );
                let [call] = c.message.tool_calls.as_slice() else {
                    panic!("case {id}: one call, got {:?}", c.message.tool_calls)
                };
                assert_eq!(&call.name, name);
                call.arguments.clone()
            }
        };
        let value: Value = serde_json::from_str(&output)
            .unwrap_or_else(|e| panic!("case {id}: {output:?} is not JSON: {e}"));
        if let Err(e) = validator.validate(&value) {
            panic!("case {id}: {output} does not fit {}: {e}", c.schema);
        }
    }
}
