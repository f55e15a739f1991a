//! The grammar a request's output must follow, from its `tools`, `tool_choice`,
//! `parallel_tool_calls` and `response_format`, in llguidance's Lark dialect (see
//! [`crate::engine::constraint`]).
//!
//! Calls use the Hermes / Qwen convention the tool prompt teaches:
//! `<tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>`, where the object is
//! constrained by a JSON schema: the name is one of the offered functions and the arguments
//! validate against that function's `parameters`. Under `auto` the text is free until the
//! model writes `<tool_call>`, and from there the call must be a valid one; under `none` the
//! text may never contain `<tool_call>`. `response_format` constrains the answer the same
//! way, and combines with tools: the output is then either a valid answer or valid calls.

use serde_json::{json, Value};

use crate::api::chat_request::ChatRequest;
use crate::api::tools::{FunctionTool, ResponseFormat, ToolChoice};

/// Where reasoning can appear in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thinking {
    /// Not a reasoning model (or thinking is off).
    Off,
    /// The model may open a `<think>` block first.
    Optional,
    /// The prompt opened the block: the output starts inside it.
    Open,
}

/// JavaScript's `Number.MAX_SAFE_INTEGER`.
const SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Text without tool markup: no `<tool_call`, and no `<tool_response` or `</tool_response`
/// either (a small model otherwise echoes the results it was given, tags and all).
const TEXT_WITHOUT_CALLS: &str = r"TEXT: /(?s:.*)/ & ~/(?s:.*)<\/?tool_(call|response)(?s:.*)/";

/// The grammar for `req`, or `None` when the output is free.
pub fn grammar(req: &ChatRequest, thinking: Thinking) -> Option<String> {
    let format = match &req.response_format {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(json!({"type": "object"})),
        ResponseFormat::JsonSchema { schema, .. } => Some(schema.clone()),
    };
    let choice = req.tool_choice.clone().unwrap_or(if req.tools.is_empty() {
        ToolChoice::None
    } else {
        ToolChoice::Auto
    });
    let mut rules = Vec::new();
    let body = match (&choice, format) {
        (ToolChoice::None, None) if req.tools.is_empty() => return None,
        (ToolChoice::None, None) => {
            rules.push(TEXT_WITHOUT_CALLS.to_string());
            "TEXT".to_string()
        }
        (ToolChoice::None, Some(schema)) => {
            rules.push(format!("answer: %json {}", styled(schema)));
            "answer".to_string()
        }
        (ToolChoice::Required, _) => calls(&mut rules, &req.tools, req.parallel_tool_calls),
        (ToolChoice::Function(name), _) => {
            let tool: Vec<FunctionTool> = req
                .tools
                .iter()
                .filter(|t| &t.name == name)
                .cloned()
                .collect();
            // A named function is one call to it.
            calls(&mut rules, &tool, false)
        }
        (ToolChoice::Auto, Some(schema)) => {
            rules.push(format!("answer: %json {}", styled(schema)));
            format!(
                "answer | {}",
                calls(&mut rules, &req.tools, req.parallel_tool_calls)
            )
        }
        (ToolChoice::Auto, None) => {
            // Free text, or text up to the first `<tool_call>` and then valid calls.
            calls(&mut rules, &req.tools, req.parallel_tool_calls);
            rules.push(TEXT_WITHOUT_CALLS.to_string());
            rules.push(r"lead[lazy]: LEAD".to_string());
            rules.push(
                r"LEAD: /(?s:.*)<tool_call>/ & ~/(?s:.*)<\/?tool_response(?s:.*)/".to_string(),
            );
            let more = if req.parallel_tool_calls {
                r#" ("\n" tool_call)*"#
            } else {
                ""
            };
            format!(r#"TEXT | lead "\n" call "\n</tool_call>"{more}"#)
        }
    };
    // The thought ends at the first `</think>` (a lazy rule: a greedy one would run on).
    let start = match thinking {
        Thinking::Off => format!("start: {body}"),
        Thinking::Optional => format!("start: (\"<think>\" thought)? ({body})"),
        Thinking::Open => format!("start: thought ({body})"),
    };
    if thinking != Thinking::Off {
        rules.push(r"thought: thought_text /\s+/?".to_string());
        rules.push(r"thought_text[lazy]: /(?s:.*)<\/think>/".to_string());
    }
    Some(
        std::iter::once(start)
            .chain(rules)
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Adds the rules for one or more calls to `tools`; returns the rule to use.
fn calls(rules: &mut Vec<String>, tools: &[FunctionTool], parallel: bool) -> String {
    let objects: Vec<Value> = tools.iter().enumerate().map(call_schema).collect();
    let mut schema = if let [one] = objects.as_slice() {
        one.clone()
    } else {
        json!({"anyOf": objects})
    };
    // Each tool's parameters live under the root's `$defs`, so that the references inside
    // them resolve against them, not against this wrapper.
    let defs: serde_json::Map<String, Value> = tools
        .iter()
        .enumerate()
        .map(|(i, t)| (tool_def(i), rooted(&t.parameters, &tool_def(i))))
        .collect();
    schema["$defs"] = Value::Object(defs);
    rules.push(format!("call: %json {}", styled(schema)));
    rules.push(r#"tool_call: "<tool_call>\n" call "\n</tool_call>""#.to_string());
    rules.push(
        if parallel {
            r#"calls: tool_call ("\n" tool_call)*"#
        } else {
            "calls: tool_call"
        }
        .to_string(),
    );
    "calls".to_string()
}

/// The `$defs` name of the `i`th tool's parameters.
fn tool_def(i: usize) -> String {
    format!("supernet_tool_{i}")
}

/// `{"name": <this function>, "arguments": <its parameters>}`.
fn call_schema((i, tool): (usize, &FunctionTool)) -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"const": tool.name},
            "arguments": {"$ref": format!("#/$defs/{}", tool_def(i))},
        },
        "required": ["name", "arguments"],
        "additionalProperties": false,
    })
}

/// `schema` with its local references (`#`, `#/...`) pointed at `#/$defs/{def}`, where it
/// will live. (Schemas nest at most `schema_limits::MAX_DEPTH` deep.)
fn rooted(schema: &Value, def: &str) -> Value {
    match schema {
        Value::Object(obj) => Value::Object(
            obj.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("$ref", Value::String(r)) if r.starts_with('#') => {
                            Value::String(format!("#/$defs/{def}{}", &r[1..]))
                        }
                        _ => rooted(v, def),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| rooted(v, def)).collect()),
        other => other.clone(),
    }
}

/// Narrows what a schema allows where a small model would otherwise run on until
/// `max_tokens`, so that every output still validates against the schema as sent:
/// - objects that list their properties and do not say whether others are allowed get none
///   (OpenAI's strict mode makes every object so), so the model cannot invent keys; `allOf`
///   parts are left open, since closing each would reject the others' properties;
/// - integers without bounds stay within JavaScript's safe range (what JSON parsers can
///   hold exactly), so the model cannot write digits forever.
fn tighten(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    if obj.contains_key("properties")
        && !obj.contains_key("additionalProperties")
        && obj.get("type").is_none_or(|t| t == "object")
    {
        obj.insert("additionalProperties".into(), false.into());
    }
    if obj.get("type").is_some_and(|t| t == "integer") {
        obj.entry("maximum").or_insert(SAFE_INTEGER.into());
        obj.entry("minimum").or_insert((-SAFE_INTEGER).into());
    }
    for (key, v) in obj.iter_mut() {
        match key.as_str() {
            "properties" | "$defs" | "definitions" => v
                .as_object_mut()
                .into_iter()
                .flat_map(|m| m.values_mut())
                .for_each(tighten),
            "items" | "additionalProperties" => tighten(v),
            "anyOf" | "oneOf" | "prefixItems" => {
                v.as_array_mut().into_iter().flatten().for_each(tighten)
            }
            _ => {}
        }
    }
}

/// The schema, tightened, with JSON written the way the tool prompt shows it and no room
/// for runs of whitespace (a small model can loop on them).
fn styled(mut schema: Value) -> String {
    tighten(&mut schema);
    if let Some(obj) = schema.as_object_mut() {
        obj.insert(
            "x-guidance".into(),
            json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
        );
    }
    schema.to_string()
}
