//! Function calling and structured output as requested: `tools`, `tool_choice`,
//! `parallel_tool_calls`, `response_format`, and the `tool_calls` of earlier assistant
//! turns. Validated here with OpenAI's rules, so a bad tool definition is a 400 naming the
//! field, never a silently ignored option.

use serde_json::{Map, Value};

use super::chat_request::Fields;
use super::error::ApiError;
use super::schema_limits::{SchemaBudget, MAX_TOOLS};

/// One function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionTool {
    pub name: String,
    pub description: Option<String>,
    /// A JSON schema for the arguments object (`{"type":"object"}` when none was given).
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model chooses between text and calls (the default when tools are given).
    Auto,
    /// No call, text only.
    None,
    /// At least one call, to any of the tools.
    Required,
    /// A call to this function.
    Function(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON that validates against `schema`.
    JsonSchema {
        name: String,
        schema: Value,
    },
}

/// A call an assistant turn made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them: a JSON text.
    pub arguments: String,
}

/// What OpenAI allows in a function name.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn object<'a>(v: &'a Value, path: &str) -> Result<Fields<'a>, ApiError> {
    match v {
        Value::Object(obj) => Ok(Fields {
            obj,
            path: path.to_string(),
        }),
        _ => Err(ApiError::invalid(
            path,
            format!("`{path}` must be an object"),
        )),
    }
}

/// `tools`: function tools only, with unique, well-formed names, and parameters within the
/// request's schema budget.
pub fn parse_tools(
    v: Option<&Value>,
    budget: &mut SchemaBudget,
) -> Result<Vec<FunctionTool>, ApiError> {
    let items = match v {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() > MAX_TOOLS => {
            return Err(ApiError::invalid(
                "tools",
                format!("at most {MAX_TOOLS} tools are allowed; got {}", items.len()),
            ))
        }
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ApiError::invalid("tools", "`tools` must be an array")),
    };
    let mut tools: Vec<FunctionTool> = Vec::with_capacity(items.len());
    for (i, t) in items.iter().enumerate() {
        let f = object(t, &format!("tools[{i}]"))?;
        match f.string("type")?.as_deref() {
            Some("function") => {}
            Some(other) => {
                return Err(ApiError::invalid(
                    f.param("type"),
                    format!("unsupported tool type `{other}`; only `function` tools are supported"),
                ))
            }
            None => {
                return Err(ApiError::invalid(
                    f.param("type"),
                    format!("`{}` is required", f.param("type")),
                ))
            }
        }
        let func = f.get("function").ok_or_else(|| {
            ApiError::invalid(
                f.param("function"),
                format!("`{}` is required", f.param("function")),
            )
        })?;
        let func = object(func, &f.param("function"))?;
        let name = func.string("name")?.ok_or_else(|| {
            ApiError::invalid(
                func.param("name"),
                format!("`{}` is required", func.param("name")),
            )
        })?;
        if !valid_name(&name) {
            return Err(ApiError::invalid(func.param("name"), format!("`{name}` is not a valid function name: use 1 to 64 letters, digits, underscores or dashes")));
        }
        if tools.iter().any(|t| t.name == name) {
            return Err(ApiError::invalid(
                func.param("name"),
                format!("two tools are named `{name}`"),
            ));
        }
        let parameters = match func.get("parameters") {
            None => serde_json::json!({"type": "object", "properties": {}}),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => {
                return Err(ApiError::invalid(
                    func.param("parameters"),
                    format!(
                        "`{}` must be a JSON schema object",
                        func.param("parameters")
                    ),
                ))
            }
        };
        budget.check(&func.param("parameters"), &parameters)?;
        func.bool("strict")?;
        tools.push(FunctionTool {
            name,
            description: func.string("description")?,
            parameters,
        });
    }
    Ok(tools)
}

/// `tool_choice`, checked against the tools it may name.
pub fn parse_tool_choice(
    v: Option<&Value>,
    tools: &[FunctionTool],
) -> Result<Option<ToolChoice>, ApiError> {
    let choice = match v {
        None => return Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => return Err(ApiError::invalid("tool_choice", format!("`tool_choice` must be auto, none, required or a function object, got `{other}`"))),
        },
        Some(v @ Value::Object(_)) => {
            let f = object(v, "tool_choice")?;
            if f.string("type")?.as_deref() != Some("function") {
                return Err(ApiError::invalid("tool_choice.type", "`tool_choice.type` must be `function`"));
            }
            let func = object(f.get("function").unwrap_or(&Value::Null), "tool_choice.function")?;
            let name = func.string("name")?.ok_or_else(|| ApiError::invalid("tool_choice.function.name", "`tool_choice.function.name` is required"))?;
            if !tools.iter().any(|t| t.name == name) {
                return Err(ApiError::invalid("tool_choice.function.name", format!("`tool_choice` names `{name}`, which is not among `tools`")));
            }
            ToolChoice::Function(name)
        }
        Some(_) => return Err(ApiError::invalid("tool_choice", "`tool_choice` must be a string or an object")),
    };
    if tools.is_empty() && matches!(choice, ToolChoice::Required | ToolChoice::Function(_)) {
        return Err(ApiError::invalid(
            "tool_choice",
            "`tool_choice` asks for a call, but the request has no `tools`",
        ));
    }
    Ok(Some(choice))
}

/// `response_format`, its schema within the request's schema budget.
pub fn parse_response_format(
    v: Option<&Value>,
    budget: &mut SchemaBudget,
) -> Result<ResponseFormat, ApiError> {
    let Some(v) = v else {
        return Ok(ResponseFormat::Text);
    };
    let f = object(v, "response_format")?;
    match f.string("type")?.as_deref() {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let js = object(
                f.get("json_schema").unwrap_or(&Value::Null),
                "response_format.json_schema",
            )?;
            let name = js.string("name")?.ok_or_else(|| {
                ApiError::invalid(
                    "response_format.json_schema.name",
                    "`response_format.json_schema.name` is required",
                )
            })?;
            if !valid_name(&name) {
                return Err(ApiError::invalid("response_format.json_schema.name", format!("`{name}` is not a valid schema name: use 1 to 64 letters, digits, underscores or dashes")));
            }
            js.bool("strict")?;
            js.string("description")?;
            let schema = match js.get("schema") {
                None => serde_json::json!({}),
                Some(s @ (Value::Object(_) | Value::Bool(true))) => s.clone(),
                Some(_) => {
                    return Err(ApiError::invalid(
                        "response_format.json_schema.schema",
                        "`response_format.json_schema.schema` must be a JSON schema object",
                    ))
                }
            };
            budget.check("response_format.json_schema.schema", &schema)?;
            Ok(ResponseFormat::JsonSchema { name, schema })
        }
        Some(other) => Err(ApiError::invalid(
            "response_format.type",
            format!(
                "`response_format.type` must be text, json_object or json_schema, got `{other}`"
            ),
        )),
        None => Err(ApiError::invalid(
            "response_format.type",
            "`response_format.type` is required",
        )),
    }
}

/// An assistant message's `tool_calls`.
pub fn parse_tool_calls(obj: &Map<String, Value>, path: &str) -> Result<Vec<ToolCall>, ApiError> {
    let items = match obj.get("tool_calls") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{path}.tool_calls"),
                format!("`{path}.tool_calls` must be an array"),
            ))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let f = object(c, &format!("{path}.tool_calls[{i}]"))?;
            let func = object(
                f.get("function").unwrap_or(&Value::Null),
                &f.param("function"),
            )?;
            let required = |fields: &Fields, key: &str| {
                fields.string(key)?.ok_or_else(|| {
                    ApiError::invalid(
                        fields.param(key),
                        format!("`{}` is required", fields.param(key)),
                    )
                })
            };
            Ok(ToolCall {
                id: required(&f, "id")?,
                name: required(&func, "name")?,
                arguments: required(&func, "arguments")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn param(e: ApiError) -> String {
        assert_eq!(e.status, 400);
        e.param.unwrap_or_default()
    }

    #[test]
    fn tools_and_choices_parse() {
        let tools = parse_tools(Some(&json!([
            {"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "now"}}
        ])), &mut SchemaBudget::default())
        .expect("valid");
        assert_eq!(
            tools[1].parameters,
            json!({"type": "object", "properties": {}})
        );
        let choice = |v: Value| parse_tool_choice(Some(&v), &tools);
        assert_eq!(
            choice(json!("required")).expect("valid"),
            Some(ToolChoice::Required)
        );
        assert_eq!(
            choice(json!({"type": "function", "function": {"name": "now"}})).expect("valid"),
            Some(ToolChoice::Function("now".into()))
        );
        assert_eq!(
            param(choice(json!({"type": "function", "function": {"name": "later"}})).unwrap_err()),
            "tool_choice.function.name"
        );
        assert_eq!(
            param(choice(json!("sometimes")).unwrap_err()),
            "tool_choice"
        );
        assert_eq!(
            param(parse_tool_choice(Some(&json!("required")), &[]).unwrap_err()),
            "tool_choice"
        );
        assert_eq!(
            parse_tool_choice(Some(&json!("none")), &[]).expect("none needs no tools"),
            Some(ToolChoice::None)
        );
    }

    #[test]
    fn bad_tools_are_named() {
        let bad =
            |v: Value| param(parse_tools(Some(&v), &mut SchemaBudget::default()).unwrap_err());
        assert_eq!(bad(json!({})), "tools");
        assert_eq!(bad(json!([{"type": "retrieval"}])), "tools[0].type");
        assert_eq!(bad(json!([{"type": "function"}])), "tools[0].function");
        assert_eq!(
            bad(json!([{"type": "function", "function": {"name": "a b"}}])),
            "tools[0].function.name"
        );
        assert_eq!(
            bad(
                json!([{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "a"}}])
            ),
            "tools[1].function.name"
        );
        assert_eq!(
            bad(json!([{"type": "function", "function": {"name": "a", "parameters": "x"}}])),
            "tools[0].function.parameters"
        );
    }

    #[test]
    fn response_formats_parse() {
        assert_eq!(
            parse_response_format(
                Some(&json!({"type": "json_object"})),
                &mut SchemaBudget::default()
            )
            .expect("valid"),
            ResponseFormat::JsonObject
        );
        let f = parse_response_format(Some(&json!({"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "integer"}, "strict": true}})), &mut SchemaBudget::default()).expect("valid");
        assert_eq!(
            f,
            ResponseFormat::JsonSchema {
                name: "p".into(),
                schema: json!({"type": "integer"})
            }
        );
        assert_eq!(
            param(
                parse_response_format(Some(&json!({"type": "xml"})), &mut SchemaBudget::default())
                    .unwrap_err()
            ),
            "response_format.type"
        );
        assert_eq!(
            param(
                parse_response_format(
                    Some(&json!({"type": "json_schema"})),
                    &mut SchemaBudget::default()
                )
                .unwrap_err()
            ),
            "response_format.json_schema"
        );
        assert_eq!(
            param(
                parse_response_format(
                    Some(
                        &json!({"type": "json_schema", "json_schema": {"name": "p", "schema": 3}})
                    ),
                    &mut SchemaBudget::default()
                )
                .unwrap_err()
            ),
            "response_format.json_schema.schema"
        );
    }

    #[test]
    fn assistant_tool_calls_parse() {
        let m = json!({"tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]});
        let calls = parse_tool_calls(m.as_object().expect("object"), "messages[1]").expect("valid");
        assert_eq!(
            calls,
            [ToolCall {
                id: "call_1".into(),
                name: "f".into(),
                arguments: "{\"a\":1}".into()
            }]
        );
        let m = json!({"tool_calls": [{"id": "call_1", "function": {"name": "f"}}]});
        assert_eq!(
            param(parse_tool_calls(m.as_object().expect("object"), "messages[1]").unwrap_err()),
            "messages[1].tool_calls[0].function.arguments"
        );
    }
}
