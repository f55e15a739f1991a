//! The conversation as the chat template gets it, tools included.
//!
//! A template that renders `tools` itself (Qwen's, Llama 3.1's) gets them, and gets earlier
//! calls as OpenAI-shaped `tool_calls` with the arguments as objects (as HuggingFace
//! templates expect). A template that does not (SmolLM2's) gets the Hermes / Qwen convention
//! written out: a system block that lists the functions and shows the
//! `<tool_call>{"name": ..., "arguments": ...}</tool_call>` format, and earlier calls written
//! in that format in the assistant's turn. The grammar ([`super::grammar`]) expects exactly
//! this format. Tool results stay `tool` turns with the result as sent: wrapped in
//! `<tool_response>` tags inside a user turn (Qwen's way), SmolLM2 echoes the tags instead
//! of answering.

use serde_json::{json, Value};

use crate::api::chat_request::{ChatRequest, Message, Role};
use crate::api::tools::{FunctionTool, ToolCall};
use crate::engine::template::{python_json, ChatMessage, ChatTemplate};

/// The messages and the `tools` variable to render `req` with.
pub fn conversation(
    req: &ChatRequest,
    template: &ChatTemplate,
) -> (Vec<ChatMessage>, Option<Value>) {
    let offered = req.offers_tools();
    if template.handles_tools {
        let tools = offered.then(|| Value::Array(req.tools.iter().map(openai_tool).collect()));
        return (req.messages.iter().map(template_message).collect(), tools);
    }
    let mut messages: Vec<ChatMessage> = Vec::with_capacity(req.messages.len() + 1);
    for m in &req.messages {
        match m.role {
            Role::Assistant if !m.tool_calls.is_empty() => {
                let calls: Vec<String> = m.tool_calls.iter().map(written_call).collect();
                let content = [m.content.as_str(), &calls.join("\n")]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join("\n");
                messages.push(ChatMessage::new("assistant", &content));
            }
            _ => messages.push(template_message(m)),
        }
    }
    if offered {
        let block = system_block(&req.tools, req.parallel_tool_calls);
        match messages.first_mut() {
            Some(first) if first.role == "system" => {
                first.content = format!("{}\n\n{block}", first.content)
            }
            _ => messages.insert(0, ChatMessage::new("system", &block)),
        }
    }
    (messages, None)
}

/// A message as it came, `developer` as `system` (the slot templates know).
fn template_message(m: &Message) -> ChatMessage {
    let calls: Vec<Value> = m
        .tool_calls
        .iter()
        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": arguments_value(c)}}))
        .collect();
    ChatMessage {
        role: if m.role == Role::Developer {
            "system".into()
        } else {
            m.role.name().into()
        },
        content: m.content.clone(),
        name: m.name.clone(),
        tool_call_id: m.tool_call_id.clone(),
        tool_calls: (!calls.is_empty()).then_some(Value::Array(calls)),
        reasoning_content: m.reasoning_content.clone(),
    }
}

/// The arguments as an object when they parse (templates write them with `tojson`), else
/// as the string the client sent.
fn arguments_value(c: &ToolCall) -> Value {
    serde_json::from_str(&c.arguments).unwrap_or_else(|_| Value::String(c.arguments.clone()))
}

/// A tool as llama.cpp hands it to templates: name, description (empty when none was
/// given), parameters, in that order.
fn openai_tool(t: &FunctionTool) -> Value {
    let description = t.description.clone().unwrap_or_default();
    json!({"type": "function", "function": {"name": t.name, "description": description, "parameters": t.parameters}})
}

/// An earlier call, written as the model writes one.
fn written_call(c: &ToolCall) -> String {
    let call = json!({"name": c.name, "arguments": arguments_value(c)});
    format!("<tool_call>\n{}\n</tool_call>", spaced(&call))
}

/// JSON with `", "` and `": "` separators, as the grammar has the model write it.
fn spaced(v: &Value) -> String {
    python_json(v, None)
}

/// The Hermes / Qwen tool-use instructions.
fn system_block(tools: &[FunctionTool], parallel: bool) -> String {
    let listed: Vec<String> = tools.iter().map(|t| spaced(&openai_tool(t))).collect();
    let how_many = if parallel {
        "You may call one or more functions"
    } else {
        "You may call one function"
    };
    format!(
        "# Tools\n\n{how_many} to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{}\n</tools>\n\n\
         For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n\
         <tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n</tool_call>",
        listed.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> ChatRequest {
        ChatRequest::parse(&body).expect("valid")
    }

    fn chatml() -> ChatTemplate {
        ChatTemplate::new(None, String::new(), String::new()).expect("template")
    }

    #[test]
    fn a_template_without_tools_gets_the_hermes_convention() {
        let req = request(json!({
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21}"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
        }));
        let (messages, tools) = conversation(&req, &chatml());
        assert!(tools.is_none());
        assert_eq!(messages[0].role, "system");
        assert!(messages[0].content.contains(r#"<tools>
{"type": "function", "function": {"name": "get_weather", "description": "", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
</tools>"#), "{}", messages[0].content);
        assert_eq!(messages[2].content, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>");
        assert_eq!(
            (messages[3].role.as_str(), messages[3].content.as_str()),
            ("tool", "{\"temp\": 21}")
        );
    }

    #[test]
    fn none_offers_no_tools_and_a_system_message_keeps_its_text() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let req = request(
            json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}], "tools": tools, "tool_choice": "none"}),
        );
        assert_eq!(conversation(&req, &chatml()).0[0].content, "Be brief.");
        let req = request(
            json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}], "tools": tools}),
        );
        let (messages, _) = conversation(&req, &chatml());
        assert!(
            messages[0].content.starts_with("Be brief.\n\n# Tools"),
            "{}",
            messages[0].content
        );
        assert_eq!(messages.len(), 2);
    }

    #[test]
    fn a_template_with_tools_gets_them_and_the_calls_as_objects() {
        let tmpl = ChatTemplate::new(Some("{{ tools | tojson }}|{% for m in messages %}{% if m.tool_calls %}{{ m.tool_calls[0].function.arguments.city }}{% endif %}{% endfor %}"), String::new(), String::new()).expect("template");
        let req = request(json!({
            "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Oslo\"}"}}]}],
            "tools": [{"type": "function", "function": {"name": "w", "description": "weather"}}]
        }));
        let (messages, tools) = conversation(&req, &tmpl);
        let out = tmpl
            .render(&messages, tools.as_ref(), false, &Default::default())
            .expect("render");
        assert_eq!(
            out,
            r#"[{"type": "function", "function": {"name": "w", "description": "weather", "parameters": {"type": "object", "properties": {}}}}]|Oslo"#
        );
    }
}
