//! The hosted tools: their definitions (`tools/hosted/*.json`, embedded at build time), the
//! families `sogni_tools` selects, and which are offered now. A media tool is offered only
//! while a media worker runs its pipeline; composition tools run on the LLM pool and are
//! always there in their mode.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

use crate::api::tools::FunctionTool;
use crate::protocol::media::MediaKind;

const FILES: &[&str] = include!(concat!(env!("OUT_DIR"), "/hosted_tools.rs"));

/// `sogni_tools`: which hosted tools a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The six default tools (omitted, `true`, `"creative-tools"`).
    #[default]
    CreativeTools,
    /// The rich family and the composition tools (`"creative-agent"`, `"rich"`).
    CreativeAgent,
    /// None (`false`, `"none"`).
    Off,
}

impl Mode {
    pub fn parse(v: &Value) -> Option<Self> {
        match v {
            Value::Bool(true) => Some(Self::CreativeTools),
            Value::Bool(false) => Some(Self::Off),
            Value::String(s) => match s.as_str() {
                "creative-tools" => Some(Self::CreativeTools),
                "creative-agent" | "rich" => Some(Self::CreativeAgent),
                "none" => Some(Self::Off),
                _ => None,
            },
            _ => None,
        }
    }

    fn includes(self, family: Family) -> bool {
        matches!(
            (self, family),
            (Self::CreativeTools, Family::Default)
                | (Self::CreativeAgent, Family::Rich | Family::Composition)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Default,
    Rich,
    Composition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Media,
    Composition,
}

/// What a media job is billed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Each image made.
    Image,
    /// Each second of video or audio asked for.
    Second,
}

/// An argument that carries media: a data URI, or an index into the request's media.
#[derive(Debug, Clone, Deserialize)]
pub struct MediaArg {
    /// The input's role in the pipeline's graph.
    pub role: String,
    pub kind: KindName,
    /// An index (or a list of them) rather than a data URI.
    #[serde(default)]
    pub index: bool,
    /// The pipeline to use instead when this argument is given.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// What an omitted index means: `latest`, the newest generated item of its kind (else
    /// the first upload). Without it an omitted argument means no such input.
    #[serde(default)]
    pub default: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KindName {
    Image,
    Video,
    Audio,
}

impl From<KindName> for MediaKind {
    fn from(k: KindName) -> Self {
        match k {
            KindName::Image => Self::Image,
            KindName::Video => Self::Video,
            KindName::Audio => Self::Audio,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ToolDef {
    pub name: String,
    pub family: Family,
    pub kind: Kind,
    pub description: String,
    pub parameters: Value,
    #[serde(default)]
    pub pipeline: Option<String>,
    #[serde(default)]
    pub output: Option<KindName>,
    #[serde(default)]
    pub unit: Option<Unit>,
    #[serde(default)]
    pub media: BTreeMap<String, MediaArg>,
    /// A composition tool's result schema.
    #[serde(default)]
    pub result: Option<Value>,
    /// Arguments the pipeline knows by another name (`change_angle`'s `description` is its
    /// graph's `prompt`).
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
}

impl ToolDef {
    pub fn function(&self) -> FunctionTool {
        FunctionTool {
            name: self.name.clone(),
            description: Some(self.description.clone()),
            parameters: self.parameters.clone(),
        }
    }

    /// The required arguments are there and no others are (hosted tools reject extra
    /// properties).
    pub fn check_names(&self, args: &serde_json::Map<String, Value>) -> Result<(), String> {
        let props = self.parameters["properties"].as_object();
        for r in self.parameters["required"].as_array().into_iter().flatten() {
            if let Some(r) = r.as_str().filter(|r| !args.contains_key(*r)) {
                return Err(format!("`{r}` is required"));
            }
        }
        match args
            .keys()
            .find(|n| props.and_then(|p| p.get(*n)).is_none())
        {
            Some(name) => Err(format!("`{name}` is not an argument of `{}`", self.name)),
            None => Ok(()),
        }
    }

    /// Whether it can run now, given the media pipelines live workers run.
    pub fn available(&self, pipelines: &[String]) -> bool {
        match (&self.kind, &self.pipeline) {
            (Kind::Composition, _) => true,
            (Kind::Media, Some(p)) => pipelines.contains(p),
            (Kind::Media, None) => false,
        }
    }
}

pub struct Catalog {
    tools: Vec<ToolDef>,
}

/// Every hosted tool this build knows.
pub fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| Catalog {
        tools: FILES
            .iter()
            .map(|text| {
                serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("a tools/hosted file is not a tool definition: {e}"))
            })
            .collect(),
    })
}

impl Catalog {
    pub fn get(&self, name: &str) -> Option<&ToolDef> {
        self.tools.iter().find(|t| t.name == name)
    }

    /// Every tool of `mode`, offered now or not.
    pub fn of_mode(&self, mode: Mode) -> impl Iterator<Item = &ToolDef> {
        self.tools.iter().filter(move |t| mode.includes(t.family))
    }

    /// The tools of `mode` that can run now.
    pub fn offered<'a>(
        &'a self,
        mode: Mode,
        pipelines: &'a [String],
    ) -> impl Iterator<Item = &'a ToolDef> {
        self.of_mode(mode).filter(move |t| t.available(pipelines))
    }

    pub fn all(&self) -> &[ToolDef] {
        &self.tools
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_definition_loads_and_the_families_are_whole() {
        let c = catalog();
        assert_eq!(c.all().len(), 26);
        let names = |mode| {
            let mut v: Vec<_> = c.of_mode(mode).map(|t| t.name.as_str()).collect();
            v.sort();
            v
        };
        assert_eq!(
            names(Mode::CreativeTools),
            [
                "sogni_edit_image",
                "sogni_generate_image",
                "sogni_generate_music",
                "sogni_generate_video",
                "sogni_sound_to_video",
                "sogni_video_to_video"
            ]
        );
        assert_eq!(names(Mode::CreativeAgent).len(), 20);
        assert_eq!(names(Mode::Off).len(), 0);
        for t in c.all() {
            assert_eq!(t.parameters["type"], "object", "{}", t.name);
            match t.kind {
                Kind::Media => assert!(t.pipeline.is_some() && t.unit.is_some(), "{}", t.name),
                Kind::Composition => assert!(t.result.is_some(), "{}", t.name),
            }
            for arg in t.media.keys() {
                assert!(
                    t.parameters["properties"].get(arg).is_some(),
                    "{}.{arg}",
                    t.name
                );
            }
        }
    }

    #[test]
    fn media_tools_are_offered_only_with_their_pipeline() {
        let c = catalog();
        let none: Vec<String> = Vec::new();
        assert_eq!(c.offered(Mode::CreativeTools, &none).count(), 0);
        assert_eq!(c.offered(Mode::CreativeAgent, &none).count(), 6);
        let images = vec!["text_to_image".to_string()];
        let offered: Vec<_> = c
            .offered(Mode::CreativeTools, &images)
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(offered, ["sogni_generate_image"]);
    }
}
