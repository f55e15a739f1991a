//! Requests become prompts through SmolLM2's own chat template, and sampling is clamped to
//! the tier: what the API will send to the engine.

mod common;

use serde_json::json;
use supernet::api::chat_request::{ChatRequest, TaskProfile};
use supernet::engine::template::{ChatMessage, ChatTemplate};
use supernet::engine::tokenizer::Tokenizer;
use supernet::engine::Model;
use supernet::session::prompt::{prepare, TierLimits};

fn setup() -> (Model, Tokenizer, ChatTemplate) {
    let model = Model::load(common::smollm2()).expect("the model");
    let tok = Tokenizer::from_gguf(&model.file).expect("tokenizer");
    let tmpl = ChatTemplate::from_gguf(&model.file, &tok).expect("template");
    (model, tok, tmpl)
}

#[test]
fn renders_through_the_models_template_and_clamps_to_the_tier() {
    let (model, tok, tmpl) = setup();
    let req = ChatRequest::parse(&json!({
        "messages": [{"role": "developer", "content": "Answer briefly."}, {"role": "user", "content": "Capital of France?"}],
        "max_tokens": 100000, "temperature": 1.9, "top_k": 0, "seed": 3, "stop": ["\n"]
    }))
    .expect("valid");
    let limits = TierLimits { default_max_tokens: 64, max_tokens: 256, max_temperature: 1.0, max_top_k: 50 };
    let p = prepare(&req, &tmpl, &tok, &limits, model.config.context_length).expect("prepared");

    // The same ids as rendering the equivalent messages directly (developer -> system).
    let direct = tmpl
        .render(&[ChatMessage::new("system", "Answer briefly."), ChatMessage::new("user", "Capital of France?")], None, true, &Default::default())
        .expect("render");
    assert!(direct.ends_with("<|im_start|>assistant\n"), "{direct:?}");
    assert_eq!(p.prompt_ids, tok.encode(&direct).expect("encode"));
    assert_eq!(p.params.max_tokens, 256);
    assert_eq!((p.params.sampler.temperature, p.params.sampler.top_k, p.params.sampler.seed), (1.0, 50, 3));
    assert_eq!(p.params.stop, ["\n"]);
    assert_eq!(p.task_profile, TaskProfile::Coding, "a developer message defaults to coding");

    let plain = ChatRequest::parse(&json!({"messages": [{"role": "user", "content": "hi"}]})).expect("valid");
    let p = prepare(&plain, &tmpl, &tok, &limits, model.config.context_length).expect("prepared");
    assert_eq!((p.params.max_tokens, p.task_profile), (64, TaskProfile::General));
    assert_eq!((p.params.sampler.temperature, p.params.sampler.top_p), (1.0, 1.0));
}

#[test]
fn a_prompt_that_fills_the_context_is_a_400() {
    let (_model, tok, tmpl) = setup();
    let long = "word ".repeat(300);
    let req = ChatRequest::parse(&json!({"messages": [{"role": "user", "content": long}], "max_tokens": 50})).expect("valid");
    let n = prepare(&req, &tmpl, &tok, &TierLimits::default(), 10_000).expect("fits").prompt_ids.len();
    // With a little room left, max_tokens shrinks to fit it.
    let p = prepare(&req, &tmpl, &tok, &TierLimits::default(), n + 10).expect("fits");
    assert_eq!(p.params.max_tokens, 10);
    let e = prepare(&req, &tmpl, &tok, &TierLimits::default(), n).expect_err("too long");
    assert_eq!((e.status, e.param.as_deref()), (400, Some("messages")));
}
