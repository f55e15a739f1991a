//! Chat prompts rendered through the model's own Jinja template
//! (`tokenizer.chat_template`) with minijinja, or ChatML when the model has none.
//!
//! HuggingFace templates are written against Python Jinja: they call string methods
//! (`.strip()`, `.startswith()`), `raise_exception`, `strftime_now` and the `tojson`
//! filter. We provide all of these so templates render unmodified, and `tojson` writes
//! what `json.dumps` (and llama.cpp's Jinja engine) writes: keys in the order given,
//! `", "` / `": "` separators, no HTML escaping, non-ASCII as is.

use minijinja::value::Kwargs;
use minijinja::{Environment, Error, ErrorKind, Value};
use serde::Serialize;

use crate::engine::gguf::GgufFile;
use crate::engine::tokenizer::Tokenizer;
use crate::engine::EngineError;

/// Used when a model carries no template.
pub const CHATML: &str = "{%- for message in messages -%}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{%- endfor -%}{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}";

/// One message as templates expect it. Optional fields are left out when empty, since
/// templates test for their presence.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            ..Default::default()
        }
    }
}

pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
    /// Whether the model shipped its own template.
    pub is_model_template: bool,
    /// Whether the template renders `tools` itself (else the session describes them).
    pub handles_tools: bool,
    /// Whether the template knows `<think>` blocks (a reasoning model).
    pub handles_thinking: bool,
}

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

fn strftime_now(format: String) -> String {
    chrono::Local::now().format(&format).to_string()
}

/// `value | tojson(indent=N)` as Python's `json.dumps(value, ensure_ascii=False)`.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let v = serde_json::to_value(&value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(Value::from_safe_string(python_json(&v, indent)))
}

/// JSON as Python's `json.dumps` writes it: `", "` and `": "` between items, or one item
/// per line under `indent` spaces per level (`","` then a newline).
pub fn python_json(v: &serde_json::Value, indent: Option<usize>) -> String {
    let mut out = String::new();
    write_json(v, indent, 0, &mut out);
    out
}

fn write_json(v: &serde_json::Value, indent: Option<usize>, level: usize, out: &mut String) {
    use serde_json::Value as J;
    let items: Vec<(Option<&String>, &J)> = match v {
        J::Object(m) if !m.is_empty() => m.iter().map(|(k, v)| (Some(k), v)).collect(),
        J::Array(a) if !a.is_empty() => a.iter().map(|v| (None, v)).collect(),
        other => {
            out.push_str(&other.to_string());
            return;
        }
    };
    let (open, close) = if v.is_object() {
        ('{', '}')
    } else {
        ('[', ']')
    };
    out.push(open);
    for (i, (key, item)) in items.iter().enumerate() {
        match indent {
            Some(n) => {
                out.push_str(if i == 0 { "\n" } else { ",\n" });
                out.push_str(&" ".repeat(n * (level + 1)));
            }
            None if i > 0 => out.push_str(", "),
            None => {}
        }
        if let Some(k) = key {
            out.push_str(&J::String((*k).clone()).to_string());
            out.push_str(": ");
        }
        write_json(item, indent, level + 1, out);
    }
    if let Some(n) = indent {
        out.push('\n');
        out.push_str(&" ".repeat(n * level));
    }
    out.push(close);
}

impl ChatTemplate {
    pub fn from_gguf(f: &GgufFile, tok: &Tokenizer) -> Result<Self, EngineError> {
        let source = f.str_opt("tokenizer.chat_template")?;
        let text = |id: Option<u32>| {
            id.and_then(|i| tok.token_text(i))
                .unwrap_or_default()
                .to_string()
        };
        Self::new(source, text(tok.bos), text(tok.eos))
    }

    /// A template from its source (`None`: ChatML).
    pub fn new(source: Option<&str>, bos: String, eos: String) -> Result<Self, EngineError> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_template_owned("chat", source.unwrap_or(CHATML).to_string())
            .map_err(|e| {
                EngineError::Template(format!("the model's chat template does not parse: {e}"))
            })?;
        let mentions = |what: &str| source.is_some_and(|s| s.contains(what));
        Ok(Self {
            env,
            bos,
            eos,
            is_model_template: source.is_some(),
            handles_tools: mentions("tools"),
            handles_thinking: mentions("<think>"),
        })
    }

    /// Renders `messages`; `tools` (OpenAI-style function list) and `kwargs` (extra template
    /// variables such as `enable_thinking`) are passed through to the template.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, EngineError> {
        let mut ctx = serde_json::Map::new();
        for (k, v) in kwargs {
            ctx.insert(k.clone(), v.clone());
        }
        ctx.insert(
            "messages".into(),
            serde_json::to_value(messages).map_err(|e| EngineError::Template(e.to_string()))?,
        );
        ctx.insert("add_generation_prompt".into(), add_generation_prompt.into());
        ctx.insert("bos_token".into(), self.bos.clone().into());
        ctx.insert("eos_token".into(), self.eos.clone().into());
        if let Some(t) = tools {
            ctx.insert("tools".into(), t.clone());
        }
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| EngineError::Template(e.to_string()))?;
        tmpl.render(Value::from_serialize(&ctx))
            .map_err(|e| EngineError::Template(format!("rendering failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_fallback_renders_a_turn() {
        let t = ChatTemplate::new(None, String::new(), String::new()).unwrap();
        let out = t
            .render(
                &[ChatMessage::new("user", "hi")],
                None,
                true,
                &Default::default(),
            )
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn hf_helpers_are_available() {
        let src = "{% if messages[0].content.startswith('x') %}{{ raise_exception('no x') }}{% endif %}\
                   {{ messages[0].content.strip() }}|{{ tools | tojson }}|{{ enable_thinking }}|{{ strftime_now('%Y') | length }}";
        let t = ChatTemplate::new(Some(src), String::new(), String::new()).unwrap();
        let tools = serde_json::json!([{"type": "function"}]);
        let mut kw = serde_json::Map::new();
        kw.insert("enable_thinking".into(), false.into());
        let out = t
            .render(
                &[ChatMessage::new("user", "  hi ")],
                Some(&tools),
                false,
                &kw,
            )
            .unwrap();
        assert_eq!(
            out, r#"hi|[{"type": "function"}]|False|4"#,
            "booleans render as Python Jinja does"
        );
        let err = t
            .render(&[ChatMessage::new("user", "xy")], None, false, &kw)
            .unwrap_err();
        assert!(err.to_string().contains("no x"), "{err}");
    }

    #[test]
    fn tojson_writes_as_python_json_dumps() {
        let v = serde_json::json!({"z": 1, "a": [true, null, "é<"], "e": {}, "f": 1.5});
        assert_eq!(
            python_json(&v, None),
            r#"{"z": 1, "a": [true, null, "é<"], "e": {}, "f": 1.5}"#
        );
        assert_eq!(
            python_json(&serde_json::json!({"a": [1], "b": []}), Some(2)),
            "{\n  \"a\": [\n    1\n  ],\n  \"b\": []\n}"
        );
    }

    #[test]
    fn tool_and_developer_messages_reach_the_template() {
        let src = "{% for m in messages %}{{ m.role }}:{{ m.content }}{% if m.tool_call_id %}#{{ m.tool_call_id }}{% endif %};{% endfor %}";
        let t = ChatTemplate::new(Some(src), String::new(), String::new()).unwrap();
        let mut tool = ChatMessage::new("tool", "42");
        tool.tool_call_id = Some("call_1".into());
        let out = t
            .render(
                &[ChatMessage::new("developer", "be brief"), tool],
                None,
                false,
                &Default::default(),
            )
            .unwrap();
        assert_eq!(out, "developer:be brief;tool:42#call_1;");
    }
}
