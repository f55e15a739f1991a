//! What the planner tools write, made into what the workflow routes accept as it is. A
//! model constrained to the result schema still writes plans that only a compiler can make
//! whole: an edit with no image to edit, a step id twice, a `$inputs.x` placeholder with no
//! input `x`. `compose_workflow`'s steps are wired (a step that needs an image takes the
//! nearest earlier image; with none it makes its own) and priced by our prices;
//! `compose_workflow_template`'s draft gets its name, declared placeholders and wiring.
//! Each result is then checked exactly as the routes check it.

use serde_json::{json, Map, Value};

use super::plan::Plan;
use super::templates::template;
use crate::session::Services;
use crate::tools::catalog::catalog;
use crate::tools::results::ToolError;

fn failed(m: String) -> ToolError {
    ToolError::new("GENERATION_FAILED", m, true)
}

/// Longest id the tools' result schemas allow (`^[a-z][a-z0-9_]{0,31}$`).
const MAX_ID: usize = 32;

/// An id unique among `taken`: `base`, else `base_2`, `base_3`, ..., cut so that it stays
/// within [`MAX_ID`] characters with its suffix.
fn unique(base: &str, taken: &[String]) -> String {
    let base = if base.is_empty() { "step" } else { base };
    (1..)
        .map(|n| {
            let suffix = if n == 1 {
                String::new()
            } else {
                format!("_{n}")
            };
            let keep: String = base.chars().take(MAX_ID - suffix.len()).collect();
            keep + &suffix
        })
        .find(|id| !taken.contains(id))
        .unwrap_or_default()
}

/// What a tool without its image turns into.
fn standalone(tool: &str) -> &str {
    match tool {
        "edit_image" => "generate_image",
        "animate_photo" => "generate_video",
        t => t,
    }
}

/// Whether `tool` needs an image it is not given.
fn needs_image(tool: &str) -> bool {
    catalog().get(tool).is_some_and(|d| {
        d.media
            .values()
            .any(|a| a.index && a.default.as_deref() == Some("latest"))
    })
}

fn makes_image(tool: &str) -> bool {
    catalog().get(tool).is_some_and(|d| {
        d.output.map(crate::protocol::media::MediaKind::from)
            == Some(crate::protocol::media::MediaKind::Image)
    })
}

/// `compose_workflow`'s result, made a plan the start route accepts.
pub fn plan(services: &Services, mut result: Value) -> Result<Value, ToolError> {
    let mut taken: Vec<String> = Vec::new();
    let mut images: Vec<String> = Vec::new();
    for step in result["steps"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .filter(|s| s.is_object())
    {
        let id = unique(step["id"].as_str().unwrap_or_default(), &taken);
        step["id"] = json!(id);
        // The wiring is the planner's: whatever the model wrote there goes.
        if let Some(o) = step.as_object_mut() {
            o.remove("dependsOn");
        }
        let tool = step["toolName"].as_str().unwrap_or_default().to_string();
        if needs_image(&tool) {
            match images.last() {
                Some(src) => {
                    step["dependsOn"] = json!([{"sourceStepId": src, "targetArgument": "sourceImageIndex", "transform": "image_index"}]);
                }
                None => step["toolName"] = json!(standalone(&tool)),
            }
        }
        if makes_image(step["toolName"].as_str().unwrap_or_default()) {
            images.push(id.clone());
        }
        taken.push(id);
    }
    let plan = Plan::parse(&result, &[])
        .map_err(|e| failed(format!("the plan is not valid: {}", e.message)))?;
    let preview = super::start::billing_preview(services, &plan, &json!({}));
    let units = preview["estimatedCapacityUnits"]
        .as_f64()
        .unwrap_or(0.0)
        .ceil() as u64;
    result["estimated_capacity_units"] = json!(units);
    Ok(result)
}

/// `compose_workflow_template`'s draft, made a template the create route accepts; `args`
/// are the tool's arguments (its name, description and category).
pub fn template_draft(args: &Map<String, Value>, mut result: Value) -> Result<Value, ToolError> {
    let draft = result
        .get_mut("template_draft")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| failed("the result has no template_draft".into()))?;
    draft.insert(
        "name".into(),
        args.get("name").cloned().unwrap_or(json!("Workflow")),
    );
    let description = args
        .get("description")
        .or_else(|| args.get("brief"))
        .cloned();
    draft.insert("description".into(), description.unwrap_or(json!("")));
    if let Some(c) = args.get("category").filter(|c| {
        c.as_str()
            .is_some_and(|c| template::CATEGORIES.contains(&c))
    }) {
        draft.insert("category".into(), c.clone());
    }
    let mut names: Vec<String> = Vec::new();
    for input in draft
        .get_mut("inputs")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter(|i| i.is_object())
    {
        let name = unique(input["name"].as_str().unwrap_or("input"), &names);
        input["name"] = json!(name);
        names.push(name);
    }
    let mut ids: Vec<String> = Vec::new();
    let mut images: Vec<String> = Vec::new();
    let mut declare: Vec<String> = Vec::new();
    let image_input = draft
        .get("inputs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|i| i["type"] == "image")
        .and_then(|i| i["name"].as_str())
        .map(String::from);
    for stage in draft
        .get_mut("stages")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter(|s| s.is_object())
    {
        let id = unique(stage["id"].as_str().unwrap_or("stage"), &ids);
        stage["id"] = json!(id);
        if let Some(o) = stage.as_object_mut() {
            o.remove("requiredArtifactsIn");
        }
        if let Some(args) = stage["args"].as_object_mut() {
            args.remove("sourceImageIndex");
        }
        let tool = stage["tool"].as_str().unwrap_or_default().to_string();
        if needs_image(&tool) {
            match (images.last(), &image_input) {
                (Some(src), _) => stage["requiredArtifactsIn"] = json!([src]),
                (None, Some(input)) => {
                    if let Some(args) = stage["args"].as_object_mut() {
                        args.insert("sourceImageIndex".into(), json!(format!("$inputs.{input}")));
                    }
                }
                (None, None) => stage["tool"] = json!(standalone(&tool)),
            }
        }
        if makes_image(stage["tool"].as_str().unwrap_or_default()) {
            images.push(id.clone());
        }
        for text in stage["args"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, v)| v.as_str())
        {
            for part in text.split("$inputs.").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && !names.contains(&name) && !declare.contains(&name) {
                    declare.push(name);
                }
            }
        }
        ids.push(id);
    }
    if let Some(inputs) = draft.get_mut("inputs").and_then(Value::as_array_mut) {
        for name in declare {
            inputs
                .push(json!({"name": name, "type": "text", "required": false, "description": ""}));
        }
    }
    template::check(&Value::Object(draft.clone()))
        .map_err(|e| failed(format!("the template draft is not valid: {}", e.message)))?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_made_unique_id_stays_within_the_schema_length() {
        let long = "selfie_to_canvas_transform_1_111";
        let taken = vec![long.to_string(), format!("{long}_2")];
        let id = super::unique(long, &taken);
        assert_eq!(id, "selfie_to_canvas_transform_1_1_2");
        assert!(id.len() <= super::MAX_ID && !taken.contains(&id));
    }

    use super::*;

    #[test]
    fn a_draft_is_wired_named_and_its_placeholders_declared() {
        let args = json!({"brief": "a makeover", "name": "Makeover", "category": "makeover"});
        let draft = json!({"template_draft": {
            "inputs": [{"name": "look", "type": "text", "required": true, "description": "the look"}],
            "stages": [
                {"id": "s", "type": "fixed", "tool": "edit_image", "args": {"prompt": "a $inputs.look $inputs.era portrait"}},
                {"id": "s", "type": "fixed", "tool": "generate_image", "args": {"prompt": "a background"}},
                {"id": "clip", "type": "fixed", "tool": "animate_photo", "args": {"prompt": "it moves"}},
            ],
        }});
        let out = template_draft(args.as_object().expect("object"), draft).expect("repaired");
        let d = &out["template_draft"];
        assert_eq!(d["name"], "Makeover");
        assert_eq!(d["category"], "makeover");
        // No image to edit and no image input: the edit makes its own image.
        assert_eq!(d["stages"][0]["tool"], "generate_image");
        assert_eq!(d["stages"][1]["id"], "s_2");
        assert_eq!(d["stages"][2]["requiredArtifactsIn"], json!(["s_2"]));
        assert_eq!(d["inputs"][1]["name"], "era");
    }
}
