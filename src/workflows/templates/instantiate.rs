//! A template invoked with its inputs becomes a plan (`input.steps`) like any other:
//! `$inputs.<name>` placeholders take the inputs' values (a media input in a media index
//! argument becomes the index of its upload), `fixed` stages become steps, `interactive`
//! stages steps an LLM round completes, and a `batch` stage one step per item of its list
//! (run at most `concurrency` at a time). `requiredArtifactsIn` binds an earlier stage's
//! outputs into the stage's media arguments; `onError` and `partialExecutionEnabled` say
//! whether a later stage still runs when those fail; `condition` leaves a stage out.

use serde_json::{json, Map, Value};

use super::template::media_kind;
use crate::api::error::ApiError;
use crate::protocol::media::{Asset, MediaKind};
use crate::tools::catalog::{catalog, ToolDef};

/// The inputs of one invocation: values by name (media as their URLs) and the uploads
/// those URLs are (`upload_urls[i]` is `uploads[i]`).
#[derive(Debug, Default)]
pub struct Given {
    pub values: Map<String, Value>,
    pub uploads: Vec<Asset>,
    pub upload_urls: Vec<String>,
}

/// Items a batch stage runs at once when it says nothing.
const BATCH_CONCURRENCY: usize = 4;

fn bad(path: &str, message: impl Into<String>) -> ApiError {
    let m = message.into();
    ApiError::invalid(path, format!("{path}: {m}"))
}

/// Checks `v` against the declared `input` (its type, options, `multiple`).
pub fn check_value(input: &Value, v: &Value, path: &str) -> Result<(), ApiError> {
    let kind = input["type"].as_str().unwrap_or_default();
    let items: Vec<&Value> = match (&input["multiple"], v) {
        (Value::Object(m), Value::Array(a)) => {
            let (min, max) = (
                m["min"].as_u64().unwrap_or(0),
                m["max"].as_u64().unwrap_or(64),
            );
            if (a.len() as u64) < min || (a.len() as u64) > max {
                return Err(bad(path, format!("takes {min} to {max} values")));
            }
            a.iter().collect()
        }
        (Value::Object(_), _) => return Err(bad(path, "takes a list")),
        (_, v) => vec![v],
    };
    for item in items {
        let ok = match kind {
            "text" => item.is_string(),
            "number" => item.is_number(),
            "boolean" => item.is_boolean(),
            "select" => input["options"]
                .as_array()
                .is_some_and(|o| o.iter().any(|op| op["value"] == *item)),
            _ => item
                .as_str()
                .is_some_and(|u| u.starts_with("http://") || u.starts_with("https://")),
        };
        if !ok {
            let want = match kind {
                "select" => "one of its options' values".to_string(),
                "image" | "audio" | "video" => {
                    format!("the http(s) URL of an {kind} (upload it first)")
                }
                k => format!("a {k}"),
            };
            return Err(bad(path, format!("must be {want}")));
        }
    }
    Ok(())
}

/// Reads an invocation's `inputs` against the template's: unknown names refused, required
/// ones present (or defaulted), each of its type. Returns the values and the media URLs
/// (name, URL) to resolve into uploads.
pub fn read_inputs(
    template: &Map<String, Value>,
    inputs: &Value,
) -> Result<(Map<String, Value>, Vec<String>), ApiError> {
    let given = match inputs {
        Value::Null => Map::new(),
        Value::Object(o) => o.clone(),
        _ => return Err(bad("inputs", "must be an object of input values by name")),
    };
    let declared: Vec<&Value> = template
        .get("inputs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    if let Some(k) = given
        .keys()
        .find(|k| !declared.iter().any(|d| d["name"] == k.as_str()))
    {
        return Err(bad(
            &format!("inputs.{k}"),
            "is not an input of this template",
        ));
    }
    let mut values = Map::new();
    let mut urls = Vec::new();
    for d in declared {
        let name = d["name"].as_str().unwrap_or_default();
        let path = format!("inputs.{name}");
        let v = match given
            .get(name)
            .filter(|v| !v.is_null())
            .or(d.get("default").filter(|v| !v.is_null()))
        {
            Some(v) => v.clone(),
            None if d["required"] == true => return Err(bad(&path, "is required")),
            None => continue,
        };
        check_value(d, &v, &path)?;
        if media_kind(d["type"].as_str().unwrap_or_default()).is_some() {
            match &v {
                Value::Array(a) => {
                    urls.extend(a.iter().filter_map(Value::as_str).map(String::from))
                }
                v => urls.extend(v.as_str().map(String::from)),
            }
        }
        values.insert(name.to_string(), v);
    }
    Ok((values, urls))
}

/// What placeholders resolve to while one stage is instantiated.
struct Scope<'a> {
    template: &'a Map<String, Value>,
    given: &'a Given,
    /// A batch item: (`itemName`, the item).
    item: Option<(&'a str, &'a Value)>,
}

impl Scope<'_> {
    fn input(&self, name: &str) -> Option<&Value> {
        self.template
            .get("inputs")?
            .as_array()?
            .iter()
            .find(|i| i["name"] == name)
    }

    /// The value `name` stands for; `None` for an optional input left out.
    fn value(&self, name: &str, path: &str) -> Result<Option<&Value>, ApiError> {
        if let Some((item, v)) = self.item {
            if name == item {
                return Ok(Some(v));
            }
        }
        if self.input(name).is_none() {
            return Err(bad(
                path,
                format!("`$inputs.{name}` names no input of this template"),
            ));
        }
        Ok(self.given.values.get(name))
    }

    /// The upload index of media URL `url`.
    fn index(&self, url: &str) -> Option<i64> {
        let i = self.given.upload_urls.iter().position(|u| u == url)?;
        let kind = self.given.uploads.get(i)?.kind;
        let k = self.given.uploads[..i]
            .iter()
            .filter(|u| u.kind == kind)
            .count();
        Some(-(k as i64) - 1)
    }

    /// `v` with its placeholders filled in; `index_arg` when `v` fills a media index argument.
    fn fill(&self, v: &Value, path: &str, index_arg: bool) -> Result<Option<Value>, ApiError> {
        match v {
            Value::String(s) => {
                if let Some(name) = whole_placeholder(s, self.item.map(|i| i.0)) {
                    let Some(value) = self.value(name, path)? else {
                        return Ok(None);
                    };
                    if !index_arg {
                        return Ok(Some(value.clone()));
                    }
                    let index = |u: &Value| {
                        u.as_str()
                            .and_then(|u| self.index(u))
                            .map(Value::from)
                            .ok_or_else(|| {
                                bad(path, format!("`{s}` is not media this argument can take"))
                            })
                    };
                    return Ok(Some(match value {
                        Value::Array(a) => {
                            Value::Array(a.iter().map(index).collect::<Result<_, _>>()?)
                        }
                        v => index(v)?,
                    }));
                }
                Ok(Some(Value::String(self.text(s, path)?)))
            }
            Value::Array(a) => {
                let mut out = Vec::new();
                for (i, x) in a.iter().enumerate() {
                    out.extend(self.fill(x, &format!("{path}[{i}]"), false)?);
                }
                Ok(Some(Value::Array(out)))
            }
            Value::Object(o) => {
                let mut out = Map::new();
                for (k, x) in o {
                    if let Some(x) = self.fill(x, &format!("{path}.{k}"), false)? {
                        out.insert(k.clone(), x);
                    }
                }
                Ok(Some(Value::Object(out)))
            }
            v => Ok(Some(v.clone())),
        }
    }

    /// `s` with every `$inputs.<name>` (and `$item`) in it replaced by its value as text.
    fn text(&self, s: &str, path: &str) -> Result<String, ApiError> {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            let (name, len) = if let Some(n) = tail.strip_prefix("$inputs.") {
                let name: String = n
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let len = "$inputs.".len() + name.len();
                (name, len)
            } else if tail.starts_with("$item") && self.item.is_some() {
                (
                    self.item.map(|i| i.0.to_string()).unwrap_or_default(),
                    "$item".len(),
                )
            } else {
                out.push('$');
                rest = &tail[1..];
                continue;
            };
            if name.is_empty() {
                out.push('$');
                rest = &tail[1..];
                continue;
            }
            out.push_str(&match self.value(&name, path)? {
                None => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), String::from))
                    .collect::<Vec<_>>()
                    .join(", "),
                Some(v) => v.to_string(),
            });
            rest = &tail[len..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// `name` when `s` is exactly `$inputs.<name>` (or `$item` in a batch).
fn whole_placeholder<'a>(s: &'a str, item: Option<&'a str>) -> Option<&'a str> {
    if s == "$item" {
        return item;
    }
    s.strip_prefix("$inputs.")
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

/// The tool a stage runs.
fn stage_tool(stage: &Value) -> Option<&'static ToolDef> {
    match stage["type"].as_str() {
        Some("fixed") => stage["tool"].as_str().and_then(|t| catalog().get(t)),
        Some("interactive") => stage["allowedTools"][0]
            .as_str()
            .and_then(|t| catalog().get(t)),
        Some("batch") => stage_tool(&stage["itemStage"]),
        _ => None,
    }
}

/// One step of `stage` (fixed or interactive) as `input.steps` takes it.
fn step(
    stage: &Value,
    id: &str,
    scope: &Scope,
    path: &str,
) -> Result<Map<String, Value>, ApiError> {
    let mut s = Map::new();
    s.insert("id".into(), json!(id));
    if stage["type"] == "interactive" {
        let mut i = json!({
            "systemPrompt": scope.text(stage["systemPrompt"].as_str().unwrap_or_default(), &format!("{path}.systemPrompt"))?,
            "allowedTools": stage["allowedTools"],
        });
        if let Some(m) = stage["userMessage"].as_str() {
            i["userMessage"] = json!(scope.text(m, &format!("{path}.userMessage"))?);
        }
        s.insert("interactive".into(), i);
        return Ok(s);
    }
    let tool = stage["tool"].as_str().unwrap_or_default();
    let def = catalog().get(tool);
    let mut args = Map::new();
    for (k, v) in stage["args"].as_object().into_iter().flatten() {
        let index_arg = def.is_some_and(|d| d.media.get(k).is_some_and(|m| m.index));
        if let Some(v) = scope.fill(v, &format!("{path}.args.{k}"), index_arg)? {
            args.insert(k.clone(), v);
        }
    }
    s.insert("toolName".into(), json!(tool));
    s.insert("arguments".into(), Value::Object(args));
    Ok(s)
}

/// Whether a stage's `condition` holds (`$inputs.<name>`: its value is set and not false,
/// 0 or empty).
fn holds(stage: &Value, scope: &Scope, path: &str) -> Result<bool, ApiError> {
    let c = match &stage["condition"] {
        Value::Null => return Ok(true),
        Value::String(c) => c,
        _ => return Err(bad(&format!("{path}.condition"), "is `$inputs.<name>`")),
    };
    let name = whole_placeholder(c, None)
        .ok_or_else(|| bad(&format!("{path}.condition"), "is `$inputs.<name>`"))?;
    Ok(match scope.value(name, &format!("{path}.condition"))? {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(_) => true,
    })
}

/// The plan (`{title, steps}`) the template `t` makes with `given`.
pub fn instantiate(t: &Map<String, Value>, given: &Given) -> Result<Value, ApiError> {
    let scope = Scope {
        template: t,
        given,
        item: None,
    };
    // Each stage's steps' ids, its output kind, and whether later stages need it to succeed.
    let mut made: Vec<(String, Vec<String>, Option<MediaKind>, bool)> = Vec::new();
    let mut steps: Vec<Value> = Vec::new();
    for (i, stage) in t
        .get("stages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("stages[{i}]");
        let id = stage["id"].as_str().unwrap_or_default();
        if !holds(stage, &scope, &path)? {
            continue;
        }
        let on_error = stage["onError"].as_str().unwrap_or("stop");
        let mut needed = !matches!(on_error, "continue" | "skip");
        let attempts = if on_error == "retry_once" { 2 } else { 1 };
        let mut own: Vec<Map<String, Value>> = Vec::new();
        if stage["type"] == "batch" {
            let over = stage["overBinding"]
                .as_str()
                .and_then(|b| b.strip_prefix("$inputs."))
                .unwrap_or_default();
            let items: Vec<Value> = match scope.value(over, &format!("{path}.overBinding"))? {
                None => Vec::new(),
                Some(Value::Array(a)) => a.clone(),
                Some(v) => vec![v.clone()],
            };
            let item_name = stage["itemName"].as_str().unwrap_or("item");
            needed &= stage["partialExecutionEnabled"] != true;
            let max = stage["maxAttemptsPerItem"]
                .as_u64()
                .unwrap_or(attempts)
                .clamp(1, 5);
            let concurrency = stage["concurrency"]
                .as_u64()
                .map_or(BATCH_CONCURRENCY, |c| c.max(1) as usize);
            for (k, item) in items.iter().enumerate() {
                let item_scope = Scope {
                    template: t,
                    given,
                    item: Some((item_name, item)),
                };
                let mut s = step(
                    &stage["itemStage"],
                    &format!("{id}_{}", k + 1),
                    &item_scope,
                    &format!("{path}.itemStage"),
                )?;
                s.insert("maxAttempts".into(), json!(max));
                s.insert(
                    "group".into(),
                    json!({"name": id, "concurrency": concurrency}),
                );
                own.push(s);
            }
        } else {
            let mut s = step(stage, id, &scope, &path)?;
            if attempts > 1 {
                s.insert("maxAttempts".into(), json!(attempts));
            }
            own.push(s);
        }
        let bindings = required_artifacts(stage, &made, &path)?;
        for s in &mut own {
            let mut deps: Vec<Value> = stage["dependsOn"].as_array().cloned().unwrap_or_default();
            deps.extend(bindings.iter().cloned());
            if !deps.is_empty() {
                s.insert("dependsOn".into(), Value::Array(deps));
            }
        }
        made.push((
            id.to_string(),
            own.iter()
                .map(|s| s["id"].as_str().unwrap_or_default().to_string())
                .collect(),
            stage_tool(stage)
                .and_then(|d| d.output)
                .map(MediaKind::from),
            needed,
        ));
        steps.extend(own.into_iter().map(Value::Object));
    }
    if steps.is_empty() {
        return Err(bad("stages", "with these inputs no stage runs"));
    }
    Ok(json!({"title": t.get("name"), "steps": steps}))
}

/// The bindings `requiredArtifactsIn` gives a stage: each earlier stage's outputs into the
/// stage's first free media index argument of their kind (an array argument takes them all).
fn required_artifacts(
    stage: &Value,
    made: &[(String, Vec<String>, Option<MediaKind>, bool)],
    path: &str,
) -> Result<Vec<Value>, ApiError> {
    let def = stage_tool(stage);
    let interactive = stage["type"] == "interactive"
        || stage["type"] == "batch" && stage["itemStage"]["type"] == "interactive";
    let set: Vec<String> = match stage["type"].as_str() {
        Some("batch") => stage["itemStage"]["args"].as_object(),
        _ => stage["args"].as_object(),
    }
    .into_iter()
    .flatten()
    .map(|(k, _)| k.clone())
    .collect();
    let mut taken: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for r in stage["requiredArtifactsIn"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let r = r.as_str().unwrap_or_default();
        let Some((_, ids, kind, needed)) = made.iter().find(|m| m.0 == r) else {
            continue; // a stage its condition left out
        };
        let kind = kind.ok_or_else(|| {
            bad(
                &format!("{path}.requiredArtifactsIn"),
                format!("`{r}` makes no media"),
            )
        })?;
        let transform = format!("{}_index", kind.as_str());
        let target = if interactive {
            "media".to_string()
        } else {
            let def =
                def.ok_or_else(|| bad(&format!("{path}.tool"), "is not a hosted media tool"))?;
            let props = &def.parameters["properties"];
            let free = |array: bool| {
                def.media.iter().find(|(name, a)| {
                    a.index
                        && MediaKind::from(a.kind) == kind
                        && !set.contains(name)
                        && (props[name.as_str()]["type"] == "array") == array
                        && (array || !taken.contains(name))
                })
            };
            let found = if ids.len() > 1 {
                free(true).or_else(|| free(false))
            } else {
                free(false).or_else(|| free(true))
            };
            let (name, _) = found.ok_or_else(|| {
                bad(
                    &format!("{path}.requiredArtifactsIn"),
                    format!(
                        "`{}` has no free {} argument for the output of `{r}`",
                        def.name,
                        kind.as_str()
                    ),
                )
            })?;
            name.clone()
        };
        for id in ids {
            out.push(json!({"sourceStepId": id, "targetArgument": target, "transform": transform, "required": needed}));
        }
        taken.push(target);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(url: &str, kind: MediaKind) -> Asset {
        Asset {
            id: format!("a-{}", url.len()),
            account_id: "acct".into(),
            kind,
            mime: "image/png".into(),
            size_bytes: 1,
            width: None,
            height: None,
            duration_ms: None,
        }
    }

    fn template() -> Map<String, Value> {
        json!({
            "name": "Portrait set",
            "inputs": [
                {"name": "photo", "type": "image", "required": true},
                {"name": "styles", "type": "text", "multiple": {"min": 1, "max": 4}, "required": true},
                {"name": "music", "type": "boolean", "default": false},
                {"name": "mood", "type": "select", "options": [{"value": "calm", "label": "Calm"}], "default": "calm"},
            ],
            "stages": [
                {"id": "portrait", "type": "fixed", "tool": "edit_image",
                 "args": {"prompt": "a $inputs.mood portrait", "sourceImageIndex": "$inputs.photo"}, "onError": "retry_once"},
                {"id": "variants", "type": "batch", "overBinding": "$inputs.styles", "itemName": "style",
                 "partialExecutionEnabled": true, "concurrency": 2,
                 "itemStage": {"id": "variant", "type": "fixed", "tool": "edit_image", "args": {"prompt": "in the style of $inputs.style"}},
                 "requiredArtifactsIn": ["portrait"]},
                {"id": "clip", "type": "fixed", "tool": "animate_photo", "args": {"prompt": "it moves"},
                 "requiredArtifactsIn": ["portrait"]},
                {"id": "song", "type": "fixed", "tool": "generate_music", "args": {"prompt": "a $inputs.mood song"},
                 "condition": "$inputs.music"},
            ],
        })
        .as_object()
        .cloned()
        .expect("object")
    }

    #[test]
    fn a_template_becomes_a_plan_with_its_inputs() {
        let t = template();
        let (values, media) = read_inputs(
            &t,
            &json!({"photo": "https://h/p.png", "styles": ["ink", "oil"]}),
        )
        .expect("inputs");
        assert_eq!(media, ["https://h/p.png"]);
        assert_eq!(values["mood"], "calm");
        let given = Given {
            values,
            uploads: vec![upload("https://h/p.png", MediaKind::Image)],
            upload_urls: media,
        };
        let plan = instantiate(&t, &given).expect("plan");
        let steps = plan["steps"].as_array().expect("steps");
        let ids: Vec<&str> = steps.iter().filter_map(|s| s["id"].as_str()).collect();
        // The song's condition is false; the batch made one step per style.
        assert_eq!(ids, ["portrait", "variants_1", "variants_2", "clip"]);
        assert_eq!(
            steps[0]["arguments"],
            json!({"prompt": "a calm portrait", "sourceImageIndex": -1})
        );
        assert_eq!(steps[0]["maxAttempts"], 2);
        assert_eq!(steps[1]["arguments"]["prompt"], "in the style of ink");
        assert_eq!(
            steps[2]["group"],
            json!({"name": "variants", "concurrency": 2})
        );
        // retry_once keeps later stages waiting on it; the portrait feeds both.
        assert_eq!(
            steps[3]["dependsOn"],
            json!([{"sourceStepId": "portrait", "targetArgument": "sourceImageIndex", "transform": "image_index", "required": true}])
        );
        crate::workflows::plan::Plan::parse(&plan, &given.uploads).expect("a valid plan");
    }

    #[test]
    fn inputs_are_checked_against_the_template() {
        let t = template();
        let err = |inputs: Value| read_inputs(&t, &inputs).expect_err("refused").message;
        assert!(err(json!({"styles": ["x"]})).contains("inputs.photo: is required"));
        assert!(
            err(json!({"photo": "data:image/png;base64,AA", "styles": ["x"]}))
                .contains("http(s) URL")
        );
        assert!(err(json!({"photo": "https://h/p", "styles": []})).contains("1 to 4"));
        assert!(
            err(json!({"photo": "https://h/p", "styles": ["x"], "mood": "loud"}))
                .contains("options")
        );
        assert!(
            err(json!({"photo": "https://h/p", "styles": ["x"], "colour": 1}))
                .contains("inputs.colour")
        );
        let mut bad = template();
        bad["stages"][0]["args"]["prompt"] = json!("a $inputs.nope portrait");
        let given = Given::default();
        let e = instantiate(&bad, &given)
            .expect_err("unknown placeholder")
            .message;
        assert!(e.contains("`$inputs.nope` names no input"), "{e}");
    }

    #[test]
    fn the_template_check_makes_its_example_plan() {
        let ok = crate::workflows::templates::template::check(&Value::Object(template()))
            .expect("valid");
        assert_eq!(ok["visibility"], "private");
        let mut no_input = template();
        no_input["stages"][2]["tool"] = json!("generate_music");
        let e = crate::workflows::templates::template::check(&Value::Object(no_input))
            .expect_err("music takes no image")
            .message;
        assert!(e.contains("requiredArtifactsIn"), "{e}");
        let mut unknown = template();
        unknown.insert("colour".into(), json!(1));
        assert!(crate::workflows::templates::template::check(&Value::Object(unknown)).is_err());
    }
}
