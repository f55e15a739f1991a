//! Budget-aware endings on SmolLM2-135M: every constrained output ends as valid JSON that
//! fits its schema, whatever `max_tokens` cuts it at. Each schema of
//! `tests/data/structured.json`, plus objects with an unbounded string, array and number
//! (where a small model writes until the budget runs out), goes through `prepare` and the
//! batch scheduler as a `response_format`, a forced call and a `required` call (one or more
//! calls, each valid), at budgets
//! from 8 to 200 tokens. `finish_reason` is `length` exactly when the budget ended the
//! output: a `stop` never comes past the budget, a `length` never before it.

use crate::common;

use std::collections::HashMap;

use serde_json::{json, Value};
use supernet::api::chat_request::ChatRequest;
use supernet::api::chat_response::{AssistantMessage, Delta};
use supernet::engine::batch::{Output, Request};
use supernet::engine::generate::{FinishReason, Resume, ENDING_ALLOWANCE};
use supernet::session::markup::Markup;
use supernet::session::prompt::{prepare, ModelText, TierLimits};

const BUDGETS: [u32; 6] = [8, 14, 24, 40, 72, 200];

struct Case {
    what: String,
    schema: Value,
    call: bool,
    budget: u32,
    markup: Markup,
    message: AssistantMessage,
    tokens: usize,
    raw: String,
    finish: Option<FinishReason>,
}

/// (name, schema, question) of every schema tried.
fn schemas() -> Vec<(String, Value, String)> {
    let data: Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo().join("tests/data/structured.json"))
            .expect("the schemas"),
    )
    .expect("JSON");
    let mut out = Vec::new();
    for f in data["formats"].as_array().expect("formats") {
        out.push((
            f["name"].as_str().unwrap_or("f").to_string(),
            f["schema"].clone(),
            f["question"].as_str().unwrap_or("").to_string(),
        ));
    }
    for t in data["tools"].as_array().expect("tools") {
        out.push((
            t["name"].as_str().unwrap_or("t").to_string(),
            t["parameters"].clone(),
            t["question"].as_str().unwrap_or("").to_string(),
        ));
    }
    let unbounded = [
        (
            "long_story",
            json!({"type": "object", "properties": {"story": {"type": "string"}}, "required": ["story"]}),
            "Write a very long story about a dragon, as long as you can.",
        ),
        (
            "many_numbers",
            json!({"type": "object", "properties": {"numbers": {"type": "array", "items": {"type": "integer"}}}, "required": ["numbers"]}),
            "List every integer from 1 to 1000.",
        ),
        (
            "precise_pi",
            json!({"type": "object", "properties": {"pi": {"type": "number"}}, "required": ["pi"]}),
            "Give pi with as many digits as you know.",
        ),
    ];
    for (n, s, q) in unbounded {
        out.push((n.to_string(), s, q.to_string()));
    }
    out
}

#[test]
fn every_constrained_output_ends_valid_at_every_budget() {
    let (model, tok, template, be, mut scheduler) = common::smollm2_scheduler(32);
    let text = ModelText {
        template: &template,
        tokenizer: &tok,
        context_length: model.config.context_length,
        id: "model",
        vision: None,
    };
    let mut cases = HashMap::new();
    let mut id = 0u64;
    let only = std::env::var("BUDGET_CASES").ok();
    for (name, schema, question) in schemas() {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|n| n == name))
        {
            continue;
        }
        let tool = json!({"type": "function", "function": {"name": name, "parameters": schema}});
        let format =
            json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema}});
        let modes = [
            ("response_format", false, json!({"response_format": format})),
            (
                "forced",
                true,
                json!({"tools": [tool], "tool_choice": {"type": "function", "function": {"name": name}}}),
            ),
            (
                "required",
                true,
                json!({"tools": [tool], "tool_choice": "required"}),
            ),
        ];
        for (mode, call, extra) in modes {
            for budget in BUDGETS {
                let mut body = json!({"messages": [{"role": "user", "content": question}], "temperature": 0, "max_tokens": budget});
                for (k, v) in extra.as_object().expect("fields") {
                    body[k] = v.clone();
                }
                let req = ChatRequest::parse(&body).expect("valid");
                let p = prepare(&req, &text, &TierLimits::default()).expect("prepared");
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
                        id,
                        Request {
                            prompt: p.prompt_ids,
                            params: p.params,
                            resume: Resume::default(),
                            images: None,
                        },
                    )
                    .expect("queued");
                cases.insert(
                    id,
                    Case {
                        what: format!("{name} as {mode} in {budget} tokens"),
                        schema: schema.clone(),
                        call,
                        budget,
                        markup,
                        message: AssistantMessage::default(),
                        tokens: 0,
                        raw: String::new(),
                        finish: None,
                    },
                );
                id += 1;
            }
        }
    }
    while !scheduler.is_idle() {
        for out in scheduler.step(&be) {
            match out {
                Output::Token { id, text, .. } => {
                    let c = cases.get_mut(&id).expect("a case");
                    c.tokens += 1;
                    c.raw.push_str(&text);
                    c.markup
                        .push(&text)
                        .into_iter()
                        .for_each(|d: Delta| c.message.apply(d));
                }
                Output::Failed { id, reason } => {
                    panic!("{}: the grammar failed: {reason}", cases[&id].what)
                }
                Output::Finished { id, finish, .. } => {
                    let c = cases.get_mut(&id).expect("a case");
                    c.markup
                        .finish()
                        .into_iter()
                        .for_each(|d| c.message.apply(d));
                    c.finish = Some(finish);
                }
            }
        }
    }
    let mut forced = 0;
    for c in cases.values() {
        let finish = c
            .finish
            .unwrap_or_else(|| panic!("{}: never finished", c.what));
        let budget = c.budget as usize;
        match finish {
            // The end-of-sequence token may come as the budget's last.
            FinishReason::Stop => assert!(
                c.tokens <= budget,
                "{}: stop at {} tokens: {:?}",
                c.what,
                c.tokens,
                c.raw
            ),
            FinishReason::Length => {
                forced += 1;
                assert!(
                    (budget..=budget + ENDING_ALLOWANCE).contains(&c.tokens),
                    "{}: length at {} tokens",
                    c.what,
                    c.tokens
                );
            }
            FinishReason::Cancelled => panic!("{}: cancelled", c.what),
        }
        let outputs = if c.call {
            assert!(
                !c.message.tool_calls.is_empty() && c.message.content.is_empty(),
                "{}: calls only, got {:?} from {:?} ({finish:?} at {} tokens)",
                c.what,
                c.message.tool_calls,
                c.raw,
                c.tokens
            );
            c.message
                .tool_calls
                .iter()
                .map(|t| t.arguments.clone())
                .collect()
        } else {
            vec![c.message.content.clone()]
        };
        let validator = jsonschema::validator_for(&c.schema).expect("a valid schema");
        for output in outputs {
            let value: Value = serde_json::from_str(&output).unwrap_or_else(|e| {
                panic!("{}: {output:?} is not JSON: {e} (from {:?})", c.what, c.raw)
            });
            if let Err(e) = validator.validate(&value) {
                panic!("{}: {output} does not fit {}: {e}", c.what, c.schema);
            }
        }
    }
    // The small budgets end most outputs: the endings were exercised.
    assert!(
        forced > cases.len() / 4,
        "only {forced} of {} outputs were ended by their budget",
        cases.len()
    );
}
