//! `POST /v1/chat/completions` request bodies: parsed from JSON and validated field by
//! field, so a bad request gets a 400 naming the exact field (`param`) and nothing runs.
//! Unknown fields are ignored, as OpenAI does; `null` counts as absent.

use serde_json::{Map, Value};

use super::error::ApiError;
use super::hosted_request::Hosted;
use super::schema_limits::SchemaBudget;
use super::tools::{
    parse_response_format, parse_tool_calls, parse_tool_choice, parse_tools, FunctionTool,
    ResponseFormat, ToolCall, ToolChoice,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::Developer => "developer",
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    /// The text parts joined; empty for an assistant turn without content.
    pub content: String,
    pub name: Option<String>,
    pub tool_call_id: Option<String>,
    /// Calls an assistant turn made.
    pub tool_calls: Vec<ToolCall>,
    /// What an assistant turn reasoned (`<think>`), as this API returned it; reasoning
    /// templates (Qwen3.5's) show it again inside a tool loop.
    pub reasoning_content: Option<String>,
    /// The images of a user turn, in order; `content` holds [`image_marker`] where each
    /// one goes.
    pub images: Vec<ImagePart>,
}

/// An image a client sent inline: its bytes (checked to decode) and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePart {
    pub data: std::sync::Arc<Vec<u8>>,
    pub width: usize,
    pub height: usize,
}

/// At most this many images per request, each at most [`MAX_IMAGE_BYTES`] (the seeds').
pub const MAX_IMAGES: usize = 20;
pub const MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;

/// The text that stands for an image in a rendered prompt: random per process (as
/// llama.cpp's server makes it), so no client text can pass for one.
pub fn image_marker() -> &'static str {
    static MARKER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    MARKER.get_or_init(|| {
        let nonce = crate::ids::random_hex(8).unwrap_or_else(|_| "0badc0de".into());
        format!("<__media_{nonce}__>")
    })
}

/// Sogni's task profile; `None` lets the session choose (coding when a developer message is
/// present, else general).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskProfile {
    General,
    Coding,
    Reasoning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenChoice {
    Spark,
    Sogni,
    Auto,
}

/// Sampling fields as the client sent them (clamping to the model tier comes later).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sampling {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<Message>,
    pub stream: bool,
    pub include_usage: bool,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub sampling: Sampling,
    pub task_profile: Option<TaskProfile>,
    /// Template variables; Sogni's `think` sets `enable_thinking` unless given here.
    pub chat_template_kwargs: Map<String, Value>,
    pub token_type: Option<TokenChoice>,
    pub tools: Vec<FunctionTool>,
    /// `None`: not given (auto when there are tools).
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: bool,
    pub response_format: ResponseFormat,
    /// Choices to generate (`n`), 1 to [`MAX_CHOICES`].
    pub n: usize,
    /// `logprobs`: report each token's log-probability with this many alternatives
    /// (`top_logprobs`, at most [`MAX_TOP_LOGPROBS`]).
    pub logprobs: Option<usize>,
    /// `logit_bias`: token id and bias, -100 to 100.
    pub logit_bias: Vec<(u32, f32)>,
    /// The Sogni fields: hosted tools and their execution.
    pub hosted: Hosted,
}

/// Most stop sequences accepted (OpenAI's limit).
const MAX_STOP: usize = 4;
pub const MAX_CHOICES: usize = 8;
pub const MAX_TOP_LOGPROBS: usize = 20;
/// `logit_bias` entries, as OpenAI allows.
const MAX_LOGIT_BIAS: usize = 300;

/// Reads optional fields of one JSON object, turning type and range errors into 400s.
pub(super) struct Fields<'a> {
    pub obj: &'a Map<String, Value>,
    pub path: String,
}

impl<'a> Fields<'a> {
    pub(super) fn param(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    pub(super) fn string(&self, key: &str) -> Result<Option<String>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid(
                self.param(key),
                format!("`{}` must be a string", self.param(key)),
            )),
        }
    }

    pub(super) fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::invalid(
                self.param(key),
                format!("`{}` must be a boolean", self.param(key)),
            )),
        }
    }

    /// A number within `lo..=hi`.
    pub(super) fn number(&self, key: &str, lo: f64, hi: f64) -> Result<Option<f32>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let p = self.param(key);
        let x = v
            .as_f64()
            .ok_or_else(|| ApiError::invalid(&p, format!("`{p}` must be a number")))?;
        if !(lo..=hi).contains(&x) {
            return Err(ApiError::invalid(
                &p,
                format!("`{p}` must be between {lo} and {hi}, got {x}"),
            ));
        }
        Ok(Some(x as f32))
    }

    /// An integer within `lo..=hi`.
    pub(super) fn integer(&self, key: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let p = self.param(key);
        let x = v
            .as_i64()
            .ok_or_else(|| ApiError::invalid(&p, format!("`{p}` must be an integer")))?;
        if !(lo..=hi).contains(&x) {
            return Err(ApiError::invalid(
                &p,
                format!("`{p}` must be between {lo} and {hi}, got {x}"),
            ));
        }
        Ok(Some(x))
    }

    pub(super) fn choice<T: Copy>(
        &self,
        key: &str,
        options: &[(&str, T)],
    ) -> Result<Option<T>, ApiError> {
        let Some(s) = self.string(key)? else {
            return Ok(None);
        };
        options
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, v)| Some(*v))
            .ok_or_else(|| {
                let names: Vec<_> = options.iter().map(|(n, _)| *n).collect();
                ApiError::invalid(
                    self.param(key),
                    format!(
                        "`{}` must be one of {}, got `{s}`",
                        self.param(key),
                        names.join(", ")
                    ),
                )
            })
    }
}

impl ChatRequest {
    /// Whether the model is offered tools to call (some are given, and `tool_choice` is not `none`).
    pub fn offers_tools(&self) -> bool {
        !self.tools.is_empty() && self.tool_choice != Some(ToolChoice::None)
    }

    /// Parses and validates a request body, with no media pipeline running.
    pub fn parse(body: &Value) -> Result<Self, ApiError> {
        Self::parse_offering(body, &[])
    }

    /// Parses and validates a request body; the hosted tools whose pipeline is among
    /// `pipelines` (those live media workers run) are offered.
    pub fn parse_offering(body: &Value, pipelines: &[String]) -> Result<Self, ApiError> {
        let obj = body
            .as_object()
            .ok_or_else(|| ApiError::bad_body("The request body must be a JSON object"))?;
        let f = Fields {
            obj,
            path: String::new(),
        };

        let messages = match f.get("messages") {
            None => return Err(ApiError::invalid("messages", "`messages` is required")),
            Some(Value::Array(a)) if a.is_empty() => {
                return Err(ApiError::invalid(
                    "messages",
                    "`messages` must not be empty",
                ))
            }
            Some(Value::Array(a)) => {
                let n_images = a
                    .iter()
                    .filter_map(|m| m.get("content").and_then(Value::as_array))
                    .flatten()
                    .filter(|p| p.get("type").and_then(Value::as_str) == Some("image_url"))
                    .count();
                if n_images > MAX_IMAGES {
                    return Err(ApiError::invalid(
                        "messages",
                        format!("the messages hold {n_images} images; at most {MAX_IMAGES} are read per request"),
                    ));
                }
                a.iter()
                    .enumerate()
                    .map(|(i, m)| parse_message(i, m))
                    .collect::<Result<Vec<_>, _>>()?
            }
            Some(_) => return Err(ApiError::invalid("messages", "`messages` must be an array")),
        };

        let max_tokens = match f.integer("max_completion_tokens", 1, u32::MAX as i64)? {
            Some(n) => Some(n),
            None => f.integer("max_tokens", 1, u32::MAX as i64)?,
        };
        let n = f.integer("n", 1, MAX_CHOICES as i64)?.unwrap_or(1) as usize;
        let top_logprobs = f.integer("top_logprobs", 0, MAX_TOP_LOGPROBS as i64)?;
        let logprobs = match (f.bool("logprobs")?.unwrap_or(false), top_logprobs) {
            (true, top) => Some(top.unwrap_or(0) as usize),
            (false, None) => None,
            (false, Some(_)) => {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    "`top_logprobs` needs `logprobs: true`",
                ))
            }
        };
        let logit_bias = parse_logit_bias(f.get("logit_bias"))?;

        let stop = match f.get("stop") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) if a.len() <= MAX_STOP => a
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    s.as_str().map(str::to_string).ok_or_else(|| {
                        ApiError::invalid(format!("stop[{i}]"), "stop sequences must be strings")
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(Value::Array(_)) => {
                return Err(ApiError::invalid(
                    "stop",
                    format!("at most {MAX_STOP} stop sequences"),
                ))
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    "stop",
                    "`stop` must be a string or an array of strings",
                ))
            }
        };

        let stream = f.bool("stream")?.unwrap_or(false);
        let include_usage = match f.get("stream_options") {
            None => false,
            Some(Value::Object(o)) => Fields {
                obj: o,
                path: "stream_options".into(),
            }
            .bool("include_usage")?
            .unwrap_or(false),
            Some(_) => {
                return Err(ApiError::invalid(
                    "stream_options",
                    "`stream_options` must be an object",
                ))
            }
        };

        let mut chat_template_kwargs = match f.get("chat_template_kwargs") {
            None => Map::new(),
            Some(Value::Object(o)) => o.clone(),
            Some(_) => {
                return Err(ApiError::invalid(
                    "chat_template_kwargs",
                    "`chat_template_kwargs` must be an object",
                ))
            }
        };
        if let Some(think) = f.bool("think")? {
            chat_template_kwargs
                .entry("enable_thinking")
                .or_insert(think.into());
        }
        let mut schemas = SchemaBudget::default();
        let mut tools = parse_tools(f.get("tools"), &mut schemas)?;
        let hosted = super::hosted_request::parse(&f, &mut tools, pipelines)?;
        let tool_choice = parse_tool_choice(f.get("tool_choice"), &tools)?;

        let sampling = Sampling {
            temperature: f.number("temperature", 0.0, 2.0)?,
            top_p: f.number("top_p", 0.0, 1.0)?,
            top_k: f.integer("top_k", 0, u32::MAX as i64)?.map(|k| k as u32),
            min_p: f.number("min_p", 0.0, 1.0)?,
            repetition_penalty: f.number("repetition_penalty", 0.01, 10.0)?,
            frequency_penalty: f.number("frequency_penalty", -2.0, 2.0)?,
            presence_penalty: f.number("presence_penalty", -2.0, 2.0)?,
            // OpenAI takes any 64-bit integer; the bits are the seed.
            seed: f.integer("seed", i64::MIN, i64::MAX)?.map(|s| s as u64),
        };

        Ok(Self {
            model: f.string("model")?,
            messages,
            stream,
            include_usage,
            max_tokens: max_tokens.map(|n| n as u32),
            stop,
            sampling,
            task_profile: f.choice(
                "task_profile",
                &[
                    ("general", TaskProfile::General),
                    ("coding", TaskProfile::Coding),
                    ("reasoning", TaskProfile::Reasoning),
                ],
            )?,
            chat_template_kwargs,
            token_type: f.choice(
                "token_type",
                &[
                    ("spark", TokenChoice::Spark),
                    ("sogni", TokenChoice::Sogni),
                    ("auto", TokenChoice::Auto),
                ],
            )?,
            tools,
            tool_choice,
            parallel_tool_calls: f.bool("parallel_tool_calls")?.unwrap_or(true),
            response_format: parse_response_format(f.get("response_format"), &mut schemas)?,
            n,
            logprobs,
            logit_bias,
            hosted,
        })
    }
}

/// `logit_bias`: token ids (as JSON object keys) to biases from -100 to 100. Whether each
/// id is in the model's vocabulary is checked where the model is known.
fn parse_logit_bias(v: Option<&Value>) -> Result<Vec<(u32, f32)>, ApiError> {
    let obj = match v {
        None => return Ok(Vec::new()),
        Some(Value::Object(o)) if o.len() <= MAX_LOGIT_BIAS => o,
        Some(Value::Object(_)) => {
            return Err(ApiError::invalid(
                "logit_bias",
                format!("`logit_bias` may hold at most {MAX_LOGIT_BIAS} tokens"),
            ))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "logit_bias",
                "`logit_bias` must be an object of token ids to biases",
            ))
        }
    };
    obj.iter()
        .map(|(k, v)| {
            let param = format!("logit_bias.{k}");
            let id = k
                .parse::<u32>()
                .map_err(|_| ApiError::invalid(&param, format!("`{k}` is not a token id")))?;
            match v.as_f64() {
                Some(b) if (-100.0..=100.0).contains(&b) => Ok((id, b as f32)),
                _ => Err(ApiError::invalid(
                    &param,
                    "a logit bias must be a number from -100 to 100",
                )),
            }
        })
        .collect()
}

fn parse_message(i: usize, m: &Value) -> Result<Message, ApiError> {
    let path = format!("messages[{i}]");
    let obj = m
        .as_object()
        .ok_or_else(|| ApiError::invalid(&path, format!("`{path}` must be an object")))?;
    let f = Fields {
        obj,
        path: path.clone(),
    };
    let roles = [
        ("system", Role::System),
        ("developer", Role::Developer),
        ("user", Role::User),
        ("assistant", Role::Assistant),
        ("tool", Role::Tool),
    ];
    let role = f
        .choice("role", &roles)?
        .ok_or_else(|| ApiError::invalid(f.param("role"), format!("`{path}.role` is required")))?;
    let mut images = Vec::new();
    let content = match f.get("content") {
        None if role == Role::Assistant => String::new(),
        None => {
            return Err(ApiError::invalid(
                f.param("content"),
                format!("`{path}.content` is required for a {} message", role.name()),
            ))
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => content_parts(&path, parts, role, &mut images)?,
        Some(_) => {
            return Err(ApiError::invalid(
                f.param("content"),
                format!("`{path}.content` must be a string or an array of parts"),
            ))
        }
    };
    let tool_calls = if role == Role::Assistant {
        parse_tool_calls(obj, &path)?
    } else {
        Vec::new()
    };
    Ok(Message {
        role,
        content,
        name: f.string("name")?,
        tool_call_id: f.string("tool_call_id")?,
        reasoning_content: match role {
            Role::Assistant => f.string("reasoning_content")?,
            _ => None,
        },
        tool_calls,
        images,
    })
}

/// The text of an array of content parts, with [`image_marker`] for each image (collected
/// into `images`). Without images the texts are joined as they are; with images as
/// llama.cpp's server joins them: a newline between texts, none around an image.
fn content_parts(
    path: &str,
    parts: &[Value],
    role: Role,
    images: &mut Vec<ImagePart>,
) -> Result<String, ApiError> {
    let mut texts: Vec<Option<&str>> = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let p = format!("{path}.content[{j}]");
        let obj = part
            .as_object()
            .ok_or_else(|| ApiError::invalid(&p, format!("`{p}` must be an object")))?;
        match obj.get("type").and_then(Value::as_str) {
            Some("text") => match obj.get("text") {
                Some(Value::String(s)) => texts.push(Some(s)),
                _ => {
                    return Err(ApiError::invalid(
                        format!("{p}.text"),
                        format!("`{p}.text` must be a string"),
                    ))
                }
            },
            Some("image_url") => {
                if role != Role::User {
                    return Err(ApiError::invalid(
                        &p,
                        format!("`{p}`: images are read in user messages only"),
                    ));
                }
                images.push(super::image_part::parse(&p, obj)?);
                texts.push(None);
            }
            Some(other) => {
                return Err(ApiError::invalid(
                    format!("{p}.type"),
                    format!("unsupported content part type `{other}`"),
                ))
            }
            None => {
                return Err(ApiError::invalid(
                    format!("{p}.type"),
                    format!("`{p}.type` is required"),
                ))
            }
        }
    }
    if texts.iter().all(Option::is_some) {
        return Ok(texts.into_iter().flatten().collect());
    }
    let mut out = String::new();
    let mut after_image = false;
    for t in texts {
        match t {
            Some(t) => {
                if !after_image && !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(t);
                after_image = false;
            }
            None => {
                out.push_str(image_marker());
                after_image = true;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn param_of(body: Value) -> String {
        let e = ChatRequest::parse(&body).expect_err("a 400");
        assert_eq!(e.status, 400, "{e}");
        e.param.unwrap_or_default()
    }

    #[test]
    fn a_full_request_parses() {
        let r = ChatRequest::parse(&json!({
            "model": "m", "stream": true, "stream_options": {"include_usage": true},
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]},
                {"role": "assistant", "content": null},
                {"role": "tool", "content": "42", "tool_call_id": "call_1"}
            ],
            "max_completion_tokens": 16, "max_tokens": 99, "temperature": 0, "top_p": 0.9, "top_k": 40,
            "min_p": 0.05, "repetition_penalty": 1.1, "frequency_penalty": -0.5, "presence_penalty": 0.5,
            "stop": ["\n\n", "END"], "seed": -1, "n": 1, "task_profile": "reasoning", "token_type": "auto",
            "chat_template_kwargs": {"enable_thinking": false}, "some_future_field": [1, 2]
        }))
        .expect("valid");
        assert_eq!(r.messages.len(), 4);
        assert_eq!(r.messages[1].content, "hi there");
        assert_eq!(
            (r.messages[2].role, r.messages[2].content.as_str()),
            (Role::Assistant, "")
        );
        assert_eq!(r.max_tokens, Some(16), "max_completion_tokens wins");
        assert_eq!(r.sampling.seed, Some(u64::MAX));
        assert!(r.stream && r.include_usage);
        assert_eq!(r.stop, ["\n\n", "END"]);
        assert_eq!(
            (r.task_profile, r.token_type),
            (Some(TaskProfile::Reasoning), Some(TokenChoice::Auto))
        );
    }

    #[test]
    fn nulls_count_as_absent() {
        let r = ChatRequest::parse(&json!({"model": null, "messages": [{"role": "user", "content": "x"}], "temperature": null, "stop": null})).expect("valid");
        assert_eq!(
            (r.model, r.sampling.temperature, r.stop.len()),
            (None, None, 0)
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let ok = || json!({"role": "user", "content": "x"});
        assert_eq!(
            ChatRequest::parse(&json!([1, 2]))
                .expect_err("not an object")
                .param,
            None
        );
        assert_eq!(param_of(json!({})), "messages");
        assert_eq!(param_of(json!({"messages": []})), "messages");
        assert_eq!(param_of(json!({"messages": "hi"})), "messages");
        assert_eq!(
            param_of(json!({"messages": [ok(), {"role": "robot", "content": "x"}]})),
            "messages[1].role"
        );
        assert_eq!(
            param_of(json!({"messages": [{"content": "x"}]})),
            "messages[0].role"
        );
        assert_eq!(
            param_of(json!({"messages": [{"role": "user"}]})),
            "messages[0].content"
        );
        assert_eq!(
            param_of(json!({"messages": [{"role": "user", "content": 5}]})),
            "messages[0].content"
        );
        assert_eq!(
            param_of(
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})
            ),
            "messages[0].content[0].image_url.url"
        );
        assert_eq!(
            param_of(
                json!({"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]})
            ),
            "messages[0].content[0].text"
        );
        assert_eq!(
            param_of(json!({"messages": [ok()], "max_tokens": -5})),
            "max_tokens"
        );
        assert_eq!(
            param_of(json!({"messages": [ok()], "max_tokens": 0})),
            "max_tokens"
        );
        assert_eq!(
            param_of(json!({"messages": [ok()], "max_tokens": "ten"})),
            "max_tokens"
        );
        assert_eq!(
            param_of(json!({"messages": [ok()], "temperature": "hot"})),
            "temperature"
        );
        assert_eq!(
            param_of(json!({"messages": [ok()], "temperature": 2.5})),
            "temperature"
        );
        assert_eq!(param_of(json!({"messages": [ok()], "top_k": 1.5})), "top_k");
        assert_eq!(param_of(json!({"messages": [ok()], "n": 9})), "n");
        assert_eq!(
            param_of(json!({"messages": [ok()], "stop": ["a", "b", "c", "d", "e"]})),
            "stop"
        );
        assert_eq!(
            param_of(json!({"messages": [ok()], "stop": [1]})),
            "stop[0]"
        );
        assert_eq!(
            param_of(json!({"messages": [ok()], "stream": "yes"})),
            "stream"
        );
        assert_eq!(
            param_of(json!({"messages": [ok()], "stream_options": {"include_usage": 1}})),
            "stream_options.include_usage"
        );
        assert_eq!(
            param_of(json!({"messages": [ok()], "task_profile": "poetry"})),
            "task_profile"
        );
        assert_eq!(
            param_of(json!({"messages": [ok()], "token_type": "usd"})),
            "token_type"
        );
        assert_eq!(
            param_of(json!({"messages": [ok()], "chat_template_kwargs": []})),
            "chat_template_kwargs"
        );
        assert_eq!(param_of(json!({"messages": [ok()], "model": 7})), "model");
    }
}
