//! A workflow template as a client writes it (contract §4 Templates), checked: its fields
//! and their types, typed inputs, and stages (`fixed`, `interactive`, `batch`) whose
//! `$inputs.<name>` placeholders name declared inputs. The deepest check is the plan it
//! makes: the template is instantiated with example inputs (each input's default, else a
//! value of its type) and that plan goes through every check a started workflow does.

use serde_json::{json, Map, Value};

use super::instantiate::{instantiate, Given};
use crate::api::error::ApiError;
use crate::protocol::media::{Asset, MediaKind};
use crate::workflows::plan::Plan;

pub const CATEGORIES: [&str; 8] = [
    "portrait",
    "video-social",
    "makeover",
    "cinematic",
    "music",
    "analysis",
    "custom",
    "other",
];
const STABILITY: [&str; 3] = ["production", "beta", "experimental"];
pub const INPUT_TYPES: [&str; 7] = [
    "image", "audio", "video", "text", "number", "select", "boolean",
];
/// Fields a client writes; the server writes `id` (when absent), `version`, `author` and
/// the timestamps, and ignores them when a client sends them back.
const FIELDS: [&str; 15] = [
    "id",
    "name",
    "description",
    "brief",
    "category",
    "stability",
    "visibility",
    "inputs",
    "stages",
    "exposeToLLM",
    "llmPriority",
    "estimatedCredits",
    "estimatedCapacityUnits",
    "graph",
    "tags",
];
const SERVER_FIELDS: [&str; 6] = [
    "version",
    "author",
    "createdAt",
    "updatedAt",
    "forkedFrom",
    "owner",
];
const STAGE_FIELDS: [&str; 18] = [
    "id",
    "type",
    "label",
    "produces",
    "requiredArtifactsIn",
    "condition",
    "onError",
    "tool",
    "args",
    "dependsOn",
    "systemPrompt",
    "allowedTools",
    "userMessage",
    "overBinding",
    "itemName",
    "itemStage",
    "concurrency",
    "partialExecutionEnabled",
];

fn bad(path: &str, message: impl Into<String>) -> ApiError {
    let m = message.into();
    ApiError::invalid(path, format!("{path}: {m}"))
}

/// The media kind of an input type.
pub fn media_kind(input_type: &str) -> Option<MediaKind> {
    MediaKind::parse(input_type)
}

/// Checks a template body (create, or the result of a patch) and returns it normalized:
/// defaults filled in, server fields left out.
pub fn check(body: &Value) -> Result<Map<String, Value>, ApiError> {
    let o = body
        .as_object()
        .ok_or_else(|| ApiError::bad_body("A template is a JSON object"))?;
    if let Some(k) = o.keys().find(|k| {
        !FIELDS.contains(&k.as_str())
            && !SERVER_FIELDS.contains(&k.as_str())
            && k.as_str() != "maxAttemptsPerItem"
    }) {
        return Err(bad(k, "is not a field of a workflow template"));
    }
    let mut t = Map::new();
    let name = o
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty() && n.len() <= 200)
        .ok_or_else(|| bad("name", "is required (1 to 200 characters)"))?;
    t.insert("name".into(), json!(name));
    let text = |k: &str, default: &str| -> Result<Value, ApiError> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(json!(default)),
            Some(Value::String(s)) if s.len() <= 20_000 => Ok(json!(s)),
            Some(_) => Err(bad(k, "must be a string")),
        }
    };
    t.insert("description".into(), text("description", "")?);
    if o.get("brief").is_some_and(|b| !b.is_null()) {
        t.insert("brief".into(), text("brief", "")?);
    }
    for (k, allowed, default) in [
        ("category", &CATEGORIES[..], "custom"),
        ("stability", &STABILITY[..], "experimental"),
        ("visibility", &["private", "public"][..], "private"),
    ] {
        let v = text(k, default)?;
        if !allowed.contains(&v.as_str().unwrap_or_default()) {
            return Err(bad(k, format!("is one of {}", allowed.join(", "))));
        }
        t.insert(k.into(), v);
    }
    match o.get("exposeToLLM") {
        None | Some(Value::Null) => t.insert("exposeToLLM".into(), json!(false)),
        Some(v @ Value::Bool(_)) => t.insert("exposeToLLM".into(), v.clone()),
        Some(_) => return Err(bad("exposeToLLM", "must be a boolean")),
    };
    match o.get("llmPriority") {
        None | Some(Value::Null) => t.insert("llmPriority".into(), json!(0)),
        Some(v @ Value::Number(_)) => t.insert("llmPriority".into(), v.clone()),
        Some(_) => return Err(bad("llmPriority", "must be a number")),
    };
    for k in ["estimatedCredits", "estimatedCapacityUnits"] {
        match o.get(k) {
            None | Some(Value::Null) => {}
            Some(v) if v["min"].is_number() && v["max"].is_number() => {
                t.insert(k.into(), json!({"min": v["min"], "max": v["max"]}));
            }
            Some(_) => return Err(bad(k, "is `{min, max}`")),
        }
    }
    if let Some(g) = o.get("graph").filter(|g| !g.is_null()) {
        if !g.is_object() {
            return Err(bad("graph", "must be an object"));
        }
        t.insert("graph".into(), g.clone());
    }
    let tags = match o.get("tags") {
        None | Some(Value::Null) => json!([]),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) && a.len() <= 32 => json!(a),
        Some(_) => return Err(bad("tags", "must be up to 32 strings")),
    };
    t.insert("tags".into(), tags);
    let inputs = check_inputs(o.get("inputs"))?;
    let stages = check_stages(o.get("stages"))?;
    t.insert("inputs".into(), Value::Array(inputs));
    t.insert("stages".into(), Value::Array(stages));
    check_example(&t)?;
    Ok(t)
}

fn check_inputs(v: Option<&Value>) -> Result<Vec<Value>, ApiError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) if a.len() <= 64 => a,
        Some(_) => return Err(bad("inputs", "must be an array of up to 64 inputs")),
    };
    let mut out: Vec<Value> = Vec::new();
    for (i, input) in list.iter().enumerate() {
        let path = format!("inputs[{i}]");
        let o = input
            .as_object()
            .ok_or_else(|| bad(&path, "must be an object"))?;
        let name = o
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| {
                !n.is_empty()
                    && n.len() <= 64
                    && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
            .ok_or_else(|| {
                bad(
                    &format!("{path}.name"),
                    "is required: letters, digits and `_`",
                )
            })?;
        if out.iter().any(|x| x["name"] == name) {
            return Err(bad(
                &format!("{path}.name"),
                format!("`{name}` names two inputs"),
            ));
        }
        let kind = o
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| INPUT_TYPES.contains(t))
            .ok_or_else(|| {
                bad(
                    &format!("{path}.type"),
                    format!("is one of {}", INPUT_TYPES.join(", ")),
                )
            })?;
        let mut x = o.clone();
        x.entry("required").or_insert(json!(false));
        x.entry("description").or_insert(json!(""));
        if !x["required"].is_boolean() {
            return Err(bad(&format!("{path}.required"), "must be a boolean"));
        }
        if kind == "select" {
            let options = o
                .get("options")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty() && a.iter().all(|op| op.get("value").is_some()))
                .ok_or_else(|| {
                    bad(
                        &format!("{path}.options"),
                        "a select input needs options `[{value, label}]`",
                    )
                })?;
            x.insert("options".into(), json!(options));
        }
        if let Some(m) = o.get("multiple").filter(|m| !m.is_null()) {
            let (min, max) = (m["min"].as_u64(), m["max"].as_u64());
            if !matches!((min, max), (Some(a), Some(b)) if a <= b && b <= 64) {
                return Err(bad(
                    &format!("{path}.multiple"),
                    "is `{min, max}` with min <= max <= 64",
                ));
            }
        }
        if let Some(d) = o.get("default").filter(|d| !d.is_null()) {
            super::instantiate::check_value(
                &Value::Object(x.clone()),
                d,
                &format!("{path}.default"),
            )?;
        }
        out.push(Value::Object(x));
    }
    Ok(out)
}

fn check_stages(v: Option<&Value>) -> Result<Vec<Value>, ApiError> {
    let list = v
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty() && a.len() <= 32)
        .ok_or_else(|| bad("stages", "must be an array of 1 to 32 stages"))?;
    let mut ids: Vec<&str> = Vec::new();
    for (i, s) in list.iter().enumerate() {
        check_stage(s, &format!("stages[{i}]"), true)?;
        let id = s["id"].as_str().unwrap_or_default();
        if ids.contains(&id) {
            return Err(bad(
                &format!("stages[{i}].id"),
                format!("`{id}` names two stages"),
            ));
        }
        for r in s["requiredArtifactsIn"].as_array().into_iter().flatten() {
            if !r.as_str().is_some_and(|r| ids.contains(&r)) {
                return Err(bad(
                    &format!("stages[{i}].requiredArtifactsIn"),
                    format!("{r} is not an earlier stage"),
                ));
            }
        }
        ids.push(id);
    }
    Ok(list.clone())
}

fn check_stage(s: &Value, path: &str, top: bool) -> Result<(), ApiError> {
    let o = s
        .as_object()
        .ok_or_else(|| bad(path, "must be an object"))?;
    if let Some(k) = o
        .keys()
        .find(|k| !STAGE_FIELDS.contains(&k.as_str()) && k.as_str() != "maxAttemptsPerItem")
    {
        return Err(bad(&format!("{path}.{k}"), "is not a field of a stage"));
    }
    let id_ok = s["id"]
        .as_str()
        .is_some_and(|id| crate::media::store::valid_id(id) && id.len() <= 40);
    if !id_ok {
        return Err(bad(
            &format!("{path}.id"),
            "is required: 1 to 40 letters, digits, `-`, `_` or `.`",
        ));
    }
    if let Some(e) = o.get("onError").filter(|e| !e.is_null()) {
        if !e
            .as_str()
            .is_some_and(|e| ["stop", "continue", "skip", "retry_once"].contains(&e))
        {
            return Err(bad(
                &format!("{path}.onError"),
                "is stop, continue, skip or retry_once",
            ));
        }
    }
    match o.get("type").and_then(Value::as_str) {
        Some("fixed") => {
            if !o.get("tool").is_some_and(Value::is_string) {
                return Err(bad(&format!("{path}.tool"), "is required"));
            }
            if !o.get("args").is_none_or(Value::is_object) {
                return Err(bad(&format!("{path}.args"), "must be an object"));
            }
        }
        Some("interactive") => {
            if !o.get("systemPrompt").is_some_and(Value::is_string) {
                return Err(bad(&format!("{path}.systemPrompt"), "is required"));
            }
            if !o.get("allowedTools").is_some_and(Value::is_array) {
                return Err(bad(&format!("{path}.allowedTools"), "is required"));
            }
        }
        Some("batch") if top => {
            let over = s["overBinding"]
                .as_str()
                .and_then(|b| b.strip_prefix("$inputs."));
            if over.is_none() {
                return Err(bad(
                    &format!("{path}.overBinding"),
                    "is `$inputs.<name>` of a list input",
                ));
            }
            if s["itemName"].as_str().is_none_or(str::is_empty) {
                return Err(bad(&format!("{path}.itemName"), "is required"));
            }
            if !o
                .get("partialExecutionEnabled")
                .is_some_and(Value::is_boolean)
            {
                return Err(bad(
                    &format!("{path}.partialExecutionEnabled"),
                    "is required (a boolean)",
                ));
            }
            let item = o
                .get("itemStage")
                .ok_or_else(|| bad(&format!("{path}.itemStage"), "is required"))?;
            check_stage(item, &format!("{path}.itemStage"), false)?;
        }
        _ if top => {
            return Err(bad(
                &format!("{path}.type"),
                "is fixed, interactive or batch",
            ))
        }
        _ => {
            return Err(bad(
                &format!("{path}.type"),
                "a batch's item stage is fixed or interactive",
            ))
        }
    }
    Ok(())
}

/// Instantiates the template with example inputs and checks the plan it makes.
fn check_example(t: &Map<String, Value>) -> Result<(), ApiError> {
    let mut given = Given::default();
    for input in t
        .get("inputs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = input["name"].as_str().unwrap_or_default().to_string();
        let kind = input["type"].as_str().unwrap_or_default();
        let count = input["multiple"]["min"].as_u64().map_or(1, |m| m.max(1)) as usize;
        let example = match (
            input.get("default").filter(|d| !d.is_null()),
            media_kind(kind),
        ) {
            (_, Some(k)) => {
                let urls: Vec<Value> = (0..count)
                    .map(|i| {
                        let url = format!("https://example.invalid/{name}/{i}");
                        given.uploads.push(example_asset(k, &url));
                        given.upload_urls.push(url.clone());
                        json!(url)
                    })
                    .collect();
                if input["multiple"].is_object() {
                    json!(urls)
                } else {
                    urls.into_iter().next().unwrap_or(Value::Null)
                }
            }
            (Some(d), None) => d.clone(),
            (None, None) => {
                let one = match kind {
                    "number" => json!(1),
                    "boolean" => json!(true),
                    "select" => input["options"][0]["value"].clone(),
                    _ => json!("example"),
                };
                if input["multiple"].is_object() {
                    json!(vec![one; count])
                } else {
                    one
                }
            }
        };
        given.values.insert(name, example);
    }
    let input = instantiate(t, &given)?;
    Plan::parse(&input, &given.uploads).map(drop).map_err(|e| {
        ApiError::invalid(
            "stages",
            format!(
                "stages: the plan this template makes is not valid: {}",
                e.message
            ),
        )
    })
}

fn example_asset(kind: MediaKind, url: &str) -> Asset {
    Asset {
        id: format!("example-{}", crate::store::key_hash(url)),
        account_id: String::new(),
        kind,
        mime: String::new(),
        size_bytes: 0,
        width: None,
        height: None,
        duration_ms: None,
    }
}
