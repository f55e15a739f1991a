//! The ComfyUI workflow graph of each media pipeline, and how a job's arguments fill it.
//! One JSON file per pipeline (`media/graphs/*.json`; an operator replaces them with
//! `--graphs DIR`): the graph in ComfyUI's API format, and its bindings, which say at which
//! node input each argument (`prompt`, `seed`, `duration`, ...) or input media role
//! (`source_image`, `reference_audio`, ...) goes. A binding may scale a number (`duration`
//! in seconds becomes a frame count), and an `optional` media binding whose media is absent
//! drops its node and every input wired to it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::protocol::media::MediaKind;

/// The graphs this build ships, the defaults.
const DEFAULTS: [&str; 8] = [
    include_str!("../../media/graphs/text_to_image.json"),
    include_str!("../../media/graphs/image_edit.json"),
    include_str!("../../media/graphs/image_edit_multi.json"),
    include_str!("../../media/graphs/text_to_video.json"),
    include_str!("../../media/graphs/image_to_video.json"),
    include_str!("../../media/graphs/sound_to_video.json"),
    include_str!("../../media/graphs/video_to_video.json"),
    include_str!("../../media/graphs/music.json"),
];

#[derive(Debug, Clone, Deserialize)]
pub struct Binding {
    pub node: String,
    pub input: String,
    #[serde(default)]
    pub multiply: Option<f64>,
    #[serde(default)]
    pub add: Option<f64>,
    /// For media: without it the node goes.
    #[serde(default)]
    pub optional: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Pipeline {
    pub pipeline: String,
    pub about: String,
    pub output: MediaKindName,
    pub bindings: BTreeMap<String, Vec<Binding>>,
    pub graph: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKindName {
    Image,
    Video,
    Audio,
}

impl From<MediaKindName> for MediaKind {
    fn from(k: MediaKindName) -> Self {
        match k {
            MediaKindName::Image => Self::Image,
            MediaKindName::Video => Self::Video,
            MediaKindName::Audio => Self::Audio,
        }
    }
}

/// Why a job's arguments do not fit its graph: the model's mistake, reported to it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct FillError(pub String);

pub struct Graphs {
    by_name: HashMap<String, Pipeline>,
}

impl Graphs {
    /// The shipped graphs.
    pub fn defaults() -> anyhow::Result<Self> {
        Self::from_texts(
            DEFAULTS
                .iter()
                .map(|t| ("(built in)".to_string(), t.to_string())),
        )
    }

    /// The graphs in `dir` (every `*.json`), checked: each binding names a node and input
    /// the graph has.
    pub fn from_dir(dir: &Path) -> anyhow::Result<Self> {
        let mut texts = Vec::new();
        for entry in std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("reading graphs from {}: {e}", dir.display()))?
        {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                texts.push((path.display().to_string(), std::fs::read_to_string(&path)?));
            }
        }
        Self::from_texts(texts.into_iter())
    }

    fn from_texts(texts: impl Iterator<Item = (String, String)>) -> anyhow::Result<Self> {
        let mut by_name = HashMap::new();
        for (source, text) in texts {
            let p: Pipeline = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("the graph file {source}: {e}"))?;
            for (arg, bindings) in &p.bindings {
                for b in bindings {
                    let has = p
                        .graph
                        .get(&b.node)
                        .and_then(|n| n.get("inputs"))
                        .and_then(|i| i.get(&b.input))
                        .is_some();
                    anyhow::ensure!(
                        has,
                        "the graph file {source}: `{arg}` is bound to node {} input `{}`, which the graph lacks",
                        b.node,
                        b.input
                    );
                }
            }
            by_name.insert(p.pipeline.clone(), p);
        }
        Ok(Self { by_name })
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<_> = self.by_name.keys().cloned().collect();
        v.sort();
        v
    }

    pub fn get(&self, pipeline: &str) -> Option<&Pipeline> {
        self.by_name.get(pipeline)
    }
}

impl Pipeline {
    /// The graph with `args` (snake_case names) and `media` (role to the name the backend
    /// knows the uploaded file by) filled in. Arguments the graph has no place for are left
    /// out; a value of the wrong type is an error.
    pub fn fill(
        &self,
        args: &Map<String, Value>,
        media: &HashMap<String, String>,
    ) -> Result<Value, FillError> {
        let mut graph = self.graph.clone();
        let mut dropped = Vec::new();
        for (name, bindings) in &self.bindings {
            for b in bindings {
                let value = match (args.get(name), media.get(name)) {
                    (_, Some(file)) => Value::String(file.clone()),
                    (Some(v), None) if !v.is_null() => v.clone(),
                    _ if b.optional => {
                        dropped.push(b.node.clone());
                        continue;
                    }
                    _ if self.is_media(name) => {
                        return Err(FillError(format!("`{name}` is required by this tool")))
                    }
                    _ => continue,
                };
                let slot = graph
                    .get_mut(&b.node)
                    .and_then(|n| n.get_mut("inputs"))
                    .and_then(|i| i.get_mut(&b.input))
                    .ok_or_else(|| FillError(format!("the graph lacks {}.{}", b.node, b.input)))?;
                *slot = converted(name, &value, slot, b)?;
            }
        }
        for node in &dropped {
            graph.remove(node);
        }
        // Inputs wired to a dropped node go with it.
        for n in graph.values_mut() {
            if let Some(inputs) = n.get_mut("inputs").and_then(Value::as_object_mut) {
                inputs.retain(|_, v| {
                    !matches!(v.as_array().and_then(|a| a.first()).and_then(Value::as_str),
                        Some(src) if dropped.iter().any(|d| d == src))
                });
            }
        }
        Ok(Value::Object(graph))
    }

    /// Whether a bound name is a media role (it fills a loader's file name).
    fn is_media(&self, name: &str) -> bool {
        self.bindings.get(name).is_some_and(|bs| {
            bs.iter().any(|b| {
                let class = self
                    .graph
                    .get(&b.node)
                    .and_then(|n| n.get("class_type"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                class.starts_with("Load") || class.starts_with("VHS_Load")
            })
        })
    }
}

/// `value` made to fit the graph's slot: numbers stay numbers (integers where the slot is
/// one), scaled as the binding says; strings stay strings.
fn converted(name: &str, value: &Value, slot: &Value, b: &Binding) -> Result<Value, FillError> {
    let wrong = || FillError(format!("`{name}` has the wrong type for this pipeline"));
    match slot {
        Value::Number(n) => {
            let x = value.as_f64().ok_or_else(wrong)? * b.multiply.unwrap_or(1.0)
                + b.add.unwrap_or(0.0);
            if !x.is_finite() {
                return Err(wrong());
            }
            if n.is_f64() {
                Ok(Value::from(x))
            } else {
                Ok(Value::from(x.round() as i64))
            }
        }
        Value::String(_) => match value {
            Value::String(_) => Ok(value.clone()),
            Value::Number(n) => Ok(Value::String(n.to_string())),
            _ => Err(wrong()),
        },
        Value::Bool(_) => value.as_bool().map(Value::Bool).ok_or_else(wrong),
        _ => Err(wrong()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_shipped_graphs_load_and_fill() {
        let g = Graphs::defaults().expect("graphs");
        assert_eq!(g.names().len(), 8);
        let t2i = g.get("text_to_image").expect("t2i");
        let args = json!({"prompt": "neon alley", "width": 512, "seed": 7, "unknown": 1});
        let filled = t2i
            .fill(args.as_object().expect("obj"), &HashMap::new())
            .expect("fill");
        assert_eq!(filled["6"]["inputs"]["text"], "neon alley");
        assert_eq!(filled["5"]["inputs"]["width"], 512);
        assert_eq!(filled["3"]["inputs"]["seed"], 7);
        let t2v = g.get("text_to_video").expect("t2v");
        let filled = t2v
            .fill(
                json!({"prompt": "x", "duration": 5})
                    .as_object()
                    .expect("obj"),
                &HashMap::new(),
            )
            .expect("fill");
        assert_eq!(filled["6"]["inputs"]["length"], 81);
        // An edit from two images loads both and blends them before sampling.
        let multi = g.get("image_edit_multi").expect("multi");
        let media: HashMap<String, String> =
            [("source_image", "a.png"), ("reference_image_1", "b.png")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let filled = multi
            .fill(json!({"prompt": "x"}).as_object().expect("obj"), &media)
            .expect("fill");
        assert_eq!(filled["10"]["inputs"]["image"], "a.png");
        assert_eq!(filled["12"]["inputs"]["image"], "b.png");
        assert_eq!(filled["11"]["inputs"]["pixels"], json!(["13", 0]));
    }

    #[test]
    fn optional_media_drops_its_node_and_required_media_is_an_error() {
        let g = Graphs::defaults().expect("graphs");
        let s2v = g.get("sound_to_video").expect("s2v");
        let args = json!({"prompt": "dance"});
        assert!(s2v
            .fill(args.as_object().expect("obj"), &HashMap::new())
            .is_err());
        let media = HashMap::from([("reference_audio".to_string(), "a.wav".to_string())]);
        let filled = s2v
            .fill(args.as_object().expect("obj"), &media)
            .expect("fill");
        assert!(filled.get("10").is_none());
        assert!(filled["11"]["inputs"].get("ref_image").is_none());
        assert_eq!(filled["12"]["inputs"]["audio"], "a.wav");
        let bad = json!({"prompt": "x", "seed": "seven"});
        assert!(g
            .get("text_to_image")
            .expect("t2i")
            .fill(bad.as_object().expect("obj"), &HashMap::new())
            .is_err());
    }
}
