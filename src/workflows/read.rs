//! A plan's steps read from the start body's JSON, either case (`toolName` or `tool_name`):
//! each field's type checked, defaults filled in, and every problem a 400 naming the step and
//! field. [`super::plan`] checks the steps against each other.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::plan::{at, output_kind, Binding, Group, Interactive, Step, Transform, INTERACTIVE};
use crate::api::error::ApiError;
use crate::protocol::media::MediaKind;
use crate::tools::catalog::{catalog, Kind};

pub fn step(s: &Value, i: usize) -> Result<Step, ApiError> {
    let path = format!("input.steps[{i}]");
    let o = s.as_object().ok_or_else(|| {
        at(
            &path,
            "must be an object `{id?, toolName, arguments, dependsOn?}`",
        )
    })?;
    let field = |camel: &str, snake: &str| {
        o.get(camel)
            .or_else(|| o.get(snake))
            .filter(|v| !v.is_null())
    };
    let id = match field("id", "id") {
        None => format!("step_{}", i + 1),
        Some(Value::String(id)) if crate::media::store::valid_id(id) && id.len() <= 64 => {
            id.clone()
        }
        Some(_) => {
            return Err(at(
                &format!("{path}.id"),
                "must be 1 to 64 letters, digits, `-`, `_` or `.`",
            ))
        }
    };
    let interactive = match field("interactive", "interactive") {
        None => None,
        Some(v) => Some(interactive(v, &format!("{path}.interactive"))?),
    };
    let tool_name = match &interactive {
        Some(_) => INTERACTIVE,
        None => field("toolName", "tool_name")
            .and_then(Value::as_str)
            .ok_or_else(|| at(&format!("{path}.toolName"), "is required"))?,
    };
    let hosted = interactive.is_some()
        || catalog()
            .get(tool_name)
            .is_some_and(|d| d.kind == Kind::Media);
    if !hosted {
        return Err(at(
            &format!("{path}.toolName"),
            format!("`{tool_name}` is not a hosted media tool of this server (GET /v1/creative-agent/tools lists them)"),
        ));
    }
    let arguments = match field("arguments", "arguments") {
        None => Map::new(),
        Some(Value::Object(a)) => a.clone(),
        Some(_) => return Err(at(&format!("{path}.arguments"), "must be an object")),
    };
    let mut depends_on = Vec::new();
    match field("dependsOn", "depends_on") {
        None => {}
        Some(Value::Array(bs)) => {
            for (j, b) in bs.iter().enumerate() {
                depends_on.push(binding(b, &format!("{path}.dependsOn[{j}]"))?);
            }
        }
        Some(_) => return Err(at(&format!("{path}.dependsOn"), "must be an array")),
    }
    if depends_on.iter().any(|b| b.source_step_id == id) {
        return Err(at(
            &format!("{path}.dependsOn"),
            "a step cannot wait for itself",
        ));
    }
    let max_attempts = match field("maxAttempts", "max_attempts") {
        None => 1,
        Some(v) => {
            v.as_u64()
                .filter(|n| (1..=5).contains(n))
                .ok_or_else(|| at(&format!("{path}.maxAttempts"), "is 1 to 5"))? as u32
        }
    };
    let group = match field("group", "group") {
        None => None,
        Some(g) => Some(
            serde_json::from_value::<Group>(g.clone())
                .ok()
                .filter(|g| g.concurrency > 0)
                .ok_or_else(|| {
                    at(
                        &format!("{path}.group"),
                        "is `{name, concurrency}` with a concurrency of 1 or more",
                    )
                })?,
        ),
    };
    Ok(Step {
        id,
        sequence: i,
        tool_name: tool_name.to_string(),
        arguments,
        depends_on,
        max_attempts,
        group,
        interactive,
    })
}

fn interactive(v: &Value, path: &str) -> Result<Interactive, ApiError> {
    let i: Interactive = serde_json::from_value(v.clone())
        .map_err(|_| at(path, "is `{systemPrompt, allowedTools[], userMessage?}`"))?;
    if i.allowed_tools.is_empty() {
        return Err(at(&format!("{path}.allowedTools"), "names no tool"));
    }
    let mut kinds = Vec::new();
    for t in &i.allowed_tools {
        let def = catalog()
            .get(t)
            .filter(|d| d.kind == Kind::Media)
            .ok_or_else(|| {
                at(
                    &format!("{path}.allowedTools"),
                    format!("`{t}` is not a hosted media tool of this server"),
                )
            })?;
        kinds.push(output_kind(def));
    }
    if kinds.windows(2).any(|w| w[0] != w[1]) {
        return Err(at(
            &format!("{path}.allowedTools"),
            "the tools of one interactive stage must make the same kind of media",
        ));
    }
    Ok(i)
}

fn binding(b: &Value, path: &str) -> Result<Binding, ApiError> {
    let o = b.as_object().ok_or_else(|| {
        at(
            path,
            "must be an object `{sourceStepId, targetArgument, transform}`",
        )
    })?;
    let known: BTreeMap<&str, &str> = [
        ("sourceStepId", "source_step_id"),
        ("targetArgument", "target_argument"),
        ("transform", "transform"),
        ("sourceArtifactId", "source_artifact_id"),
        ("sourceArtifactIndex", "source_artifact_index"),
        ("mediaType", "media_type"),
        ("required", "required"),
    ]
    .into_iter()
    .collect();
    if let Some(k) = o
        .keys()
        .find(|k| !known.contains_key(k.as_str()) && !known.values().any(|s| s == k))
    {
        return Err(at(&format!("{path}.{k}"), "is not a field of a binding"));
    }
    let get = |camel: &str| {
        o.get(camel)
            .or_else(|| o.get(known[camel]))
            .filter(|v| !v.is_null())
    };
    let text = |camel: &str| -> Result<String, ApiError> {
        get(camel)
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| at(&format!("{path}.{camel}"), "is required (a string)"))
    };
    let transform =
        Transform::parse(&text("transform")?).map_err(|m| at(&format!("{path}.transform"), m))?;
    let media_type = match get("mediaType") {
        None => None,
        Some(v) => Some(v.as_str().and_then(MediaKind::parse).ok_or_else(|| {
            at(
                &format!("{path}.mediaType"),
                "must be image, video or audio",
            )
        })?),
    };
    let source_artifact_index = match get("sourceArtifactIndex") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    at(
                        &format!("{path}.sourceArtifactIndex"),
                        "must be a whole number",
                    )
                })?,
        ),
    };
    Ok(Binding {
        source_step_id: text("sourceStepId")?,
        target_argument: text("targetArgument")?,
        transform,
        source_artifact_id: get("sourceArtifactId")
            .and_then(Value::as_str)
            .map(String::from),
        source_artifact_index,
        media_type,
        required: get("required").and_then(Value::as_bool).unwrap_or(true),
    })
}
