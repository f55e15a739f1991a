//! A workflow's plan (contract §4 `input.steps`): hosted media tool steps and the
//! `dependsOn` bindings that feed one step's outputs into another's arguments. Everything
//! a plan can get wrong is found here, at start, as a 400 naming the step and field: an
//! unknown tool or step id, a cycle, a binding whose media type the target does not take,
//! arguments that do not fit the tool's schema (checked with each bound argument standing
//! in), and media a step needs that nothing gives it.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::api::error::ApiError;
use crate::protocol::media::{Asset, MediaKind};
use crate::tools::call::check_arguments;
use crate::tools::catalog::{catalog, ToolDef};

/// Most steps a plan may have.
pub const MAX_STEPS: usize = 32;
/// `sourceStepId` of a binding that takes the request's `media_references`.
pub const INPUT_MEDIA: &str = "$input_media";

/// How a bound output becomes an argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    ArtifactUrl,
    ImageUrl,
    VideoUrl,
    AudioUrl,
    ImageIndex,
    VideoIndex,
    AudioIndex,
}

impl Transform {
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "artifact_url" => Self::ArtifactUrl,
            "image_url" => Self::ImageUrl,
            "video_url" => Self::VideoUrl,
            "audio_url" => Self::AudioUrl,
            "image_index" => Self::ImageIndex,
            "video_index" => Self::VideoIndex,
            "audio_index" => Self::AudioIndex,
            "artifact_data_uri" => {
                return Err(
                    "durable workflows pass media by URL, not inline `data:` (use `artifact_url`)"
                        .into(),
                )
            }
            "subtitle_cues" | "subtitle_srt" | "overlay_items" | "asset_ref" => {
                return Err(format!(
                    "the transform `{s}` feeds tools this server does not host"
                ))
            }
            _ => return Err(format!("`{s}` is not a transform")),
        })
    }

    /// The media kind it takes (`None`: any).
    pub fn kind(self) -> Option<MediaKind> {
        match self {
            Self::ArtifactUrl => None,
            Self::ImageUrl | Self::ImageIndex => Some(MediaKind::Image),
            Self::VideoUrl | Self::VideoIndex => Some(MediaKind::Video),
            Self::AudioUrl | Self::AudioIndex => Some(MediaKind::Audio),
        }
    }

    pub fn is_index(self) -> bool {
        matches!(self, Self::ImageIndex | Self::VideoIndex | Self::AudioIndex)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    pub source_step_id: String,
    pub target_argument: String,
    pub transform: Transform,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_artifact_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_artifact_index: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<MediaKind>,
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

/// An `interactive` template stage: an LLM round that picks one of `allowed_tools` and
/// writes its arguments; that call is the step's media job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interactive {
    pub system_prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_message: Option<String>,
    pub allowed_tools: Vec<String>,
}

/// Steps that run at most `concurrency` at a time (a template's `batch` stage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub concurrency: usize,
}

/// `toolName` of an interactive step.
pub const INTERACTIVE: &str = "interactive";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub id: String,
    pub sequence: usize,
    pub tool_name: String,
    pub arguments: Map<String, Value>,
    #[serde(default)]
    pub depends_on: Vec<Binding>,
    /// Attempts before the step fails (a template's `onError: retry_once` or
    /// `maxAttemptsPerItem`).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub max_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Group>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive: Option<Interactive>,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

impl Step {
    /// The tool the step runs (an interactive step's first allowed tool stands for the
    /// others: they make the same kind of media).
    pub fn def(&self) -> Option<&'static ToolDef> {
        match &self.interactive {
            Some(i) => i.allowed_tools.first().and_then(|t| catalog().get(t)),
            None => catalog().get(&self.tool_name),
        }
    }

    /// The steps this one waits for.
    pub fn sources(&self) -> impl Iterator<Item = &str> {
        self.depends_on
            .iter()
            .map(|b| b.source_step_id.as_str())
            .filter(|s| *s != INPUT_MEDIA)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub steps: Vec<Step>,
}

pub(super) fn at(path: &str, message: impl Into<String>) -> ApiError {
    let message = message.into();
    ApiError::invalid(path, format!("{path}: {message}"))
}

/// The kind of media a step makes.
pub(super) fn output_kind(def: &ToolDef) -> Option<MediaKind> {
    def.output.map(MediaKind::from)
}

impl Plan {
    /// Reads and checks `input` (`{title?, steps[]}`) against the request's uploads.
    pub fn parse(input: &Value, uploads: &[Asset]) -> Result<Self, ApiError> {
        let input = input
            .as_object()
            .ok_or_else(|| at("input", "must be an object `{title?, steps[]}`"))?;
        let title = match input.get("title") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(t.clone()),
            Some(_) => return Err(at("input.title", "must be a string")),
        };
        let raw = input
            .get("steps")
            .and_then(Value::as_array)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| at("input.steps", "must be a non-empty array of steps"))?;
        if raw.len() > MAX_STEPS {
            return Err(at(
                "input.steps",
                format!("a workflow has at most {MAX_STEPS} steps"),
            ));
        }
        let mut steps = Vec::with_capacity(raw.len());
        for (i, s) in raw.iter().enumerate() {
            steps.push(super::read::step(s, i)?);
        }
        let plan = Self { title, steps };
        plan.check(uploads)?;
        Ok(plan)
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id)
    }

    fn check(&self, uploads: &[Asset]) -> Result<(), ApiError> {
        for (i, s) in self.steps.iter().enumerate() {
            if self.steps[..i].iter().any(|o| o.id == s.id) {
                return Err(at(
                    &format!("input.steps[{i}].id"),
                    format!("`{}` names two steps", s.id),
                ));
            }
        }
        for (i, s) in self.steps.iter().enumerate() {
            let def = s
                .def()
                .unwrap_or_else(|| unreachable!("read_step checked the tool"));
            let mut standing_in = s.arguments.clone();
            for (j, b) in s.depends_on.iter().enumerate() {
                let path = format!("input.steps[{i}].dependsOn[{j}]");
                let kind = self.source_kind(b, uploads, &path)?;
                if s.interactive.is_none() {
                    check_target(def, b, kind, &path)?;
                    stand_in(def, b, &mut standing_in, &path)?;
                }
            }
            if s.interactive.is_some() {
                continue;
            }
            check_arguments(def, &standing_in)
                .map_err(|m| at(&format!("input.steps[{i}].arguments"), m))?;
            for (name, arg) in &def.media {
                let kind = MediaKind::from(arg.kind);
                let needed = !standing_in.contains_key(name)
                    && arg.default.as_deref() == Some("latest")
                    && !uploads.iter().any(|u| u.kind == kind);
                if needed {
                    return Err(at(
                        &format!("input.steps[{i}].arguments.{name}"),
                        format!("`{}` needs an {} here: bind one with `dependsOn` or pass it in `media_references`", s.tool_name, kind.as_str()),
                    ));
                }
            }
        }
        self.order().map(drop)
    }

    /// The media kind binding `b` brings.
    fn source_kind(
        &self,
        b: &Binding,
        uploads: &[Asset],
        path: &str,
    ) -> Result<MediaKind, ApiError> {
        let kind = if b.source_step_id == INPUT_MEDIA {
            let k = b.source_artifact_index.unwrap_or(0);
            uploads.get(k).map(|u| u.kind).ok_or_else(|| {
                at(
                    &format!("{path}.sourceArtifactIndex"),
                    format!(
                        "`$input_media` has {} item(s) (media_references); there is no item {k}",
                        uploads.len()
                    ),
                )
            })?
        } else {
            let i = self.index_of(&b.source_step_id).ok_or_else(|| {
                at(
                    &format!("{path}.sourceStepId"),
                    format!("no step `{}` in this plan", b.source_step_id),
                )
            })?;
            let def = self.steps[i]
                .def()
                .unwrap_or_else(|| unreachable!("read_step checked the tool"));
            output_kind(def).ok_or_else(|| {
                at(
                    &format!("{path}.sourceStepId"),
                    format!("step `{}` makes no media", b.source_step_id),
                )
            })?
        };
        for (field, wanted) in [
            ("mediaType", b.media_type),
            ("transform", b.transform.kind()),
        ] {
            if let Some(w) = wanted.filter(|w| *w != kind) {
                return Err(at(
                    &format!("{path}.{field}"),
                    format!(
                        "`{}` gives {} media, not {}",
                        b.source_step_id,
                        kind.as_str(),
                        w.as_str()
                    ),
                ));
            }
        }
        Ok(kind)
    }

    /// The steps in an order where each comes after the steps it waits for; a 400 for a cycle.
    pub fn order(&self) -> Result<Vec<usize>, ApiError> {
        let mut waits: Vec<usize> = self.steps.iter().map(|s| s.sources().count()).collect();
        let mut out: Vec<usize> = (0..self.steps.len()).filter(|i| waits[*i] == 0).collect();
        let mut next = 0;
        while next < out.len() {
            let done = &self.steps[out[next]].id;
            for (i, s) in self.steps.iter().enumerate() {
                for src in s.sources() {
                    if src == done {
                        waits[i] -= 1;
                        if waits[i] == 0 {
                            out.push(i);
                        }
                    }
                }
            }
            next += 1;
        }
        match (0..self.steps.len()).find(|i| waits[*i] > 0) {
            Some(i) => Err(at(
                &format!("input.steps[{i}].dependsOn"),
                format!(
                    "the steps' dependsOn form a cycle through `{}`",
                    self.steps[i].id
                ),
            )),
            None => Ok(out),
        }
    }

    /// The plan as the record shows it (contract §4 `plan.steps`).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The binding's target takes the media it brings.
fn check_target(def: &ToolDef, b: &Binding, kind: MediaKind, path: &str) -> Result<(), ApiError> {
    let t = &b.target_argument;
    let props = def.parameters["properties"].as_object();
    if props.and_then(|p| p.get(t)).is_none() {
        return Err(at(
            &format!("{path}.targetArgument"),
            format!("`{t}` is not an argument of `{}`", def.name),
        ));
    }
    let Some(arg) = def.media.get(t) else {
        if b.transform.is_index() {
            return Err(at(
                &format!("{path}.transform"),
                format!("`{t}` of `{}` takes no media index", def.name),
            ));
        }
        return Ok(());
    };
    let takes = MediaKind::from(arg.kind);
    if takes != kind {
        return Err(at(
            &format!("{path}.targetArgument"),
            format!(
                "`{t}` of `{}` takes {} media; `{}` gives {}",
                def.name,
                takes.as_str(),
                b.source_step_id,
                kind.as_str()
            ),
        ));
    }
    if arg.index != b.transform.is_index() {
        let wanted = if arg.index {
            format!("{}_index", takes.as_str())
        } else {
            format!("{}_url", takes.as_str())
        };
        return Err(at(
            &format!("{path}.transform"),
            format!("`{t}` of `{}` is bound with `{wanted}`", def.name),
        ));
    }
    Ok(())
}

/// Puts a value of the bound argument's type where the binding will put one, so the
/// schema check sees the arguments as they will be; a second binding of a target that
/// takes one value is a 400.
fn stand_in(
    def: &ToolDef,
    b: &Binding,
    args: &mut Map<String, Value>,
    path: &str,
) -> Result<(), ApiError> {
    let t = &b.target_argument;
    let schema = &def.parameters["properties"][t];
    let one = if b.transform.is_index() {
        json!(0)
    } else {
        json!("https://bound.invalid/media")
    };
    if schema["type"] == "array" {
        let list = args.entry(t.clone()).or_insert_with(|| json!([]));
        match list.as_array_mut() {
            Some(l) => l.push(one),
            None => *list = json!([one]),
        }
        return Ok(());
    }
    if args.contains_key(t) && args[t] != one {
        return Err(at(
            &format!("{path}.targetArgument"),
            format!("`{t}` takes one value and is given or bound more than once"),
        ));
    }
    args.insert(t.clone(), one);
    Ok(())
}
