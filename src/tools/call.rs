//! A hosted media call as the model wrote it, made ready for a media worker: its arguments
//! parsed and checked against the tool's schema (required fields), inline media checked and
//! stored, indices resolved against the request's [`MediaContext`], names made snake_case,
//! and the units it is billed by. Every problem is a [`ToolError`] the model sees, never a
//! failed request.

use serde_json::{Map, Value};

use super::catalog::{Kind, ToolDef, Unit};
use super::media_context::MediaContext;
use super::results::ToolError;
use crate::media::data_uri;
use crate::media::store::{Assets, NewAsset};
use crate::protocol::media::{MediaInput, MediaKind, MediaTask};

/// Seconds of video or audio a call asks for when it names none.
const DEFAULT_SECONDS: [(MediaKind, u64); 2] = [(MediaKind::Video, 5), (MediaKind::Audio, 30)];

/// A call ready to run.
#[derive(Debug, Clone)]
pub struct ReadyCall {
    pub pipeline: String,
    pub task: MediaTask,
    /// Units billed (images, or seconds).
    pub units: u64,
}

/// Prepares `def`'s call with `arguments` (the model's JSON text) for account `account_id`.
pub async fn prepare(
    def: &ToolDef,
    arguments: &str,
    account_id: &str,
    media: &MediaContext,
    assets: &Assets,
    idempotency_key: String,
) -> Result<ReadyCall, ToolError> {
    let invalid = |m: String| ToolError::new("PARAMETER_INVALID", m, false);
    let args: Map<String, Value> = match serde_json::from_str(arguments) {
        Ok(Value::Object(o)) => o,
        _ => return Err(invalid("the arguments must be a JSON object".into())),
    };
    check_arguments(def, &args).map_err(invalid)?;
    let mut pipeline = def
        .pipeline
        .clone()
        .filter(|_| def.kind == Kind::Media)
        .ok_or_else(|| invalid(format!("`{}` is not a media tool", def.name)))?;
    let mut inputs = Vec::new();
    let mut plain = Map::new();
    for (name, value) in &args {
        let Some(arg) = def.media.get(name) else {
            let name = def.rename.get(name).unwrap_or(name);
            plain.insert(snake_case(name), value.clone());
            continue;
        };
        if let Some(p) = &arg.pipeline {
            pipeline = p.clone();
        }
        let kind = MediaKind::from(arg.kind);
        if arg.index {
            let indices: Vec<i64> = match value {
                Value::Array(items) => items.iter().filter_map(Value::as_i64).collect(),
                v => v.as_i64().into_iter().collect(),
            };
            for (i, index) in indices.iter().enumerate() {
                let asset = media.resolve(kind, *index).ok_or_else(|| {
                    let (made, uploaded) = media.counts(kind);
                    ToolError::new(
                        "ASSET_NOT_FOUND",
                        format!(
                            "`{name}` = {index} names no {} (this request has {made} generated, indices 0..{made}, and {uploaded} uploaded, indices -1..-{uploaded})",
                            kind.as_str()
                        ),
                        false,
                    )
                })?;
                let role = if indices.len() > 1 || value.is_array() {
                    format!("{}_{}", arg.role, i + 1)
                } else {
                    arg.role.clone()
                };
                inputs.push(MediaInput {
                    role,
                    asset: asset.clone(),
                });
            }
        } else {
            let uri = value
                .as_str()
                .ok_or_else(|| invalid(format!("`{name}` must be a data: URI string")))?;
            if let Some(asset) = media.by_url(uri) {
                inputs.push(MediaInput {
                    role: arg.role.clone(),
                    asset: asset.clone(),
                });
                continue;
            }
            let m =
                data_uri::parse(uri, Some(kind)).map_err(|e| invalid(format!("`{name}`: {e}")))?;
            let asset = assets
                .save(NewAsset {
                    account_id: account_id.to_string(),
                    kind: m.kind,
                    mime: m.mime,
                    bytes: m.bytes,
                    width: m.width,
                    height: m.height,
                    duration_ms: None,
                })
                .await
                .map_err(|e| ToolError::new("MODEL_UNAVAILABLE", e.to_string(), true))?;
            inputs.push(MediaInput {
                role: arg.role.clone(),
                asset,
            });
        }
    }
    // An omitted index that defaults to the latest item.
    for (name, arg) in &def.media {
        if args.contains_key(name) || arg.default.as_deref() != Some("latest") {
            continue;
        }
        let kind = MediaKind::from(arg.kind);
        let asset = media.latest(kind).ok_or_else(|| {
            ToolError::new(
                "ASSET_NOT_FOUND",
                format!(
                    "`{name}` was omitted and this request has no {} to use",
                    kind.as_str()
                ),
                false,
            )
        })?;
        inputs.push(MediaInput {
            role: arg.role.clone(),
            asset: asset.clone(),
        });
    }
    let units = units(def, &plain);
    Ok(ReadyCall {
        pipeline,
        task: MediaTask {
            tool: def.name.clone(),
            arguments: Value::Object(plain).to_string(),
            inputs,
            idempotency_key,
        },
        units,
    })
}

/// The units a call with `args` (as the model or a workflow wrote them) is billed by.
pub fn units_of(def: &ToolDef, args: &Map<String, Value>) -> u64 {
    let plain: Map<String, Value> = args
        .iter()
        .map(|(k, v)| (snake_case(def.rename.get(k).unwrap_or(k)), v.clone()))
        .collect();
    units(def, &plain)
}

/// What the call is billed by: images asked for, or seconds.
fn units(def: &ToolDef, args: &Map<String, Value>) -> u64 {
    match def.unit {
        Some(Unit::Second) => {
            let kind = def.output.map(MediaKind::from).unwrap_or(MediaKind::Video);
            let default = DEFAULT_SECONDS
                .iter()
                .find(|(k, _)| *k == kind)
                .map_or(5, |(_, s)| *s);
            args.get("duration")
                .and_then(Value::as_f64)
                .map_or(default, |d| d.ceil().max(1.0) as u64)
        }
        _ => args
            .get("number_of_variations")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .max(1),
    }
}

/// The required properties are there, no unknown ones are, and each present one has its
/// schema's type, enum and range.
pub fn check_arguments(def: &ToolDef, args: &Map<String, Value>) -> Result<(), String> {
    def.check_names(args)?;
    let props = def.parameters["properties"].as_object();
    for (name, value) in args {
        let Some(schema) = props.and_then(|p| p.get(name)) else {
            continue;
        };
        let ok = match schema["type"].as_str() {
            Some("string") => value.is_string(),
            Some("integer") => value.is_i64() || value.is_u64(),
            Some("number") => value.is_number(),
            Some("boolean") => value.is_boolean(),
            Some("array") => value.is_array(),
            _ => true,
        };
        if !ok {
            return Err(format!("`{name}` must be of type {}", schema["type"]));
        }
        if let Some(allowed) = schema["enum"].as_array().filter(|a| !a.contains(value)) {
            return Err(format!(
                "`{name}` must be one of {}",
                Value::Array(allowed.clone())
            ));
        }
        let n = value.as_f64();
        if let (Some(n), Some(min)) = (n, schema["minimum"].as_f64()) {
            if n < min {
                return Err(format!("`{name}` must be at least {min}"));
            }
        }
        if let (Some(n), Some(max)) = (n, schema["maximum"].as_f64()) {
            if n > max {
                return Err(format!("`{name}` must be at most {max}"));
            }
        }
    }
    Ok(())
}

/// `negativePrompt` → `negative_prompt`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::catalog::catalog;

    #[test]
    fn names_become_snake_case() {
        assert_eq!(snake_case("negativePrompt"), "negative_prompt");
        assert_eq!(snake_case("numberOfVariations"), "number_of_variations");
        assert_eq!(snake_case("prompt"), "prompt");
    }

    #[test]
    fn the_schema_check_names_the_problem() {
        let def = catalog().get("sogni_generate_image").expect("tool");
        let args = |v: Value| v.as_object().cloned().expect("object");
        assert!(check_arguments(def, &args(serde_json::json!({"prompt": "x"}))).is_ok());
        let e =
            check_arguments(def, &args(serde_json::json!({"width": 512}))).expect_err("missing");
        assert!(e.contains("prompt"), "{e}");
        let e = check_arguments(
            def,
            &args(serde_json::json!({"prompt": "x", "width": "big"})),
        )
        .expect_err("type");
        assert!(e.contains("width"), "{e}");
        let e = check_arguments(
            def,
            &args(serde_json::json!({"prompt": "x", "width": 99999})),
        )
        .expect_err("range");
        assert!(e.contains("at most"), "{e}");
        let e = check_arguments(def, &args(serde_json::json!({"prompt": "x", "color": 1})))
            .expect_err("unknown");
        assert!(e.contains("color"), "{e}");
        assert_eq!(
            units(def, &args(serde_json::json!({"number_of_variations": 3}))),
            3
        );
        let music = catalog().get("sogni_generate_music").expect("tool");
        assert_eq!(units(music, &args(serde_json::json!({}))), 30);
        assert_eq!(units(music, &args(serde_json::json!({"duration": 12}))), 12);
    }
}
