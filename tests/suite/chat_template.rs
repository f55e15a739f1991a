//! Acceptance: the Qwen3.5/3.6 chat template (`tests/data/qwen35-template/chat_template.jinja`)
//! renders conversations with tools, tool calls, tool results, reasoning and
//! `enable_thinking` on and off exactly as llama.cpp's `llama-server` renders them
//! (`/apply-template`; the strings in `cases.json` were made by `make.py` there). Each
//! request goes the way a chat completion goes: parsed as the API parses it, turned into the
//! template's conversation by the session, rendered by minijinja.

use supernet::api::chat_request::ChatRequest;
use supernet::engine::template::ChatTemplate;
use supernet::session::tool_prompt::conversation;

#[test]
fn qwen35_template_renders_as_llama_server_does() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/qwen35-template");
    let source = std::fs::read_to_string(dir.join("chat_template.jinja")).expect("the template");
    let template = ChatTemplate::new(Some(&source), String::new(), "<|im_end|>".into())
        .expect("the template parses");
    assert!(template.handles_tools && template.handles_thinking);
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).expect("cases"))
            .expect("cases.json");
    assert_eq!(cases.len(), 5);
    for case in &cases {
        let name = case["name"].as_str().unwrap_or_default();
        let mut body = case["request"].clone();
        body["model"] = "qwen3.6-35b-a3b-gguf-iq4xs".into();
        let req = ChatRequest::parse(&body).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let (messages, tools) = conversation(&req, &template);
        let got = template
            .render(&messages, tools.as_ref(), true, &req.chat_template_kwargs)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = case["prompt"].as_str().expect("a rendered prompt");
        if got != want {
            let at = got
                .bytes()
                .zip(want.bytes())
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(want.len()));
            let from = at.saturating_sub(80);
            panic!(
                "{name}: differs at byte {at}\n--- ours:\n{}\n--- llama-server:\n{}",
                &got[from..(at + 80).min(got.len())],
                &want[from..(at + 80).min(want.len())]
            );
        }
    }
}
