//! What requests look like: a weighted mix of request shapes, read from a TOML file
//! (`--mix`), each turned into chat-completion bodies with synthetic prompts of the lengths
//! asked for. Without a file the mix is one shape: a prompt of about 128 tokens and
//! `--max-tokens` out, streamed.
//!
//! ```toml
//! [[request]]
//! name = "chat"                               # shown in errors; optional
//! weight = 3                                  # relative frequency (default 1)
//! prompt_tokens = { min = 32, max = 512 }     # a number, {min,max} (uniform) or {mean,stddev}
//! max_tokens = 64                             # the same forms; default --max-tokens
//! stream = true                               # default true
//! system = "You are a terse assistant."       # a shared system prompt (a cacheable prefix)
//! tools = [{ type = "function", function = { name = "get_weather", parameters = { type = "object", properties = { city = { type = "string" } } } } }]
//! tool_choice = "auto"
//! extra = { sogni_tools = false, temperature = 0 }   # merged into the body as is
//! ```
//!
//! Prompt lengths are in words drawn from common English words, each about one token in the
//! byte-pair vocabularies of current models; the server's `usage` gives the exact counts.

use std::path::Path;

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// A length: fixed, uniform in a range, or normal (clipped at 1).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Length {
    Fixed(u32),
    Uniform { min: u32, max: u32 },
    Normal { mean: f64, stddev: f64 },
}

impl Length {
    fn draw(self, rng: &mut StdRng) -> u32 {
        match self {
            Self::Fixed(n) => n,
            Self::Uniform { min, max } => rng.random_range(min..=max),
            Self::Normal { mean, stddev } => {
                // Box-Muller.
                let (u, v): (f64, f64) = (rng.random(), rng.random());
                let z = (-2.0 * (1.0 - u).ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
                (mean + stddev * z).round().max(1.0) as u32
            }
        }
    }

    fn check(self, what: &str) -> anyhow::Result<()> {
        match self {
            Self::Uniform { min, max } if min > max => {
                bail!("{what}: min {min} is above max {max}")
            }
            Self::Normal { mean, stddev }
                if !(mean.is_finite() && stddev.is_finite() && mean > 0.0 && stddev >= 0.0) =>
            {
                bail!("{what}: mean must be positive and stddev not negative")
            }
            _ => Ok(()),
        }
    }
}

/// One request shape of a mix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shape {
    pub name: Option<String>,
    #[serde(default = "one")]
    pub weight: f64,
    #[serde(default = "default_prompt")]
    pub prompt_tokens: Length,
    pub max_tokens: Option<Length>,
    #[serde(default = "yes")]
    pub stream: bool,
    pub system: Option<String>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub extra: Map<String, Value>,
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn default_prompt() -> Length {
    Length::Fixed(128)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MixFile {
    request: Vec<Shape>,
}

/// A weighted set of request shapes.
#[derive(Debug, Clone)]
pub struct Mix {
    shapes: Vec<Shape>,
    total: f64,
    max_tokens: u32,
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Body {
    pub json: Value,
    pub stream: bool,
}

impl Mix {
    /// The mix without a file: ~128-token prompts, `max_tokens` out, streamed.
    pub fn default_with(max_tokens: u32) -> Self {
        let shape = Shape {
            name: None,
            weight: 1.0,
            prompt_tokens: default_prompt(),
            max_tokens: None,
            stream: true,
            system: None,
            tools: None,
            tool_choice: None,
            extra: Map::new(),
        };
        Self {
            shapes: vec![shape],
            total: 1.0,
            max_tokens,
        }
    }

    pub fn load(path: &Path, max_tokens: u32) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the mix {}", path.display()))?;
        Self::parse(&text, max_tokens).with_context(|| format!("the mix {}", path.display()))
    }

    pub fn parse(text: &str, max_tokens: u32) -> anyhow::Result<Self> {
        let file: MixFile = toml::from_str(text)?;
        if file.request.is_empty() {
            bail!("it has no [[request]] shapes");
        }
        for (i, s) in file.request.iter().enumerate() {
            let what = s
                .name
                .clone()
                .unwrap_or_else(|| format!("request {}", i + 1));
            if !(s.weight.is_finite() && s.weight >= 0.0) {
                bail!("{what}: weight must be a number >= 0");
            }
            s.prompt_tokens.check(&format!("{what}: prompt_tokens"))?;
            if let Some(m) = s.max_tokens {
                m.check(&format!("{what}: max_tokens"))?;
            }
        }
        let total: f64 = file.request.iter().map(|s| s.weight).sum();
        if total <= 0.0 {
            bail!("every weight is 0");
        }
        Ok(Self {
            shapes: file.request,
            total,
            max_tokens,
        })
    }

    /// The `n`-th request's body for `model`.
    pub fn draw(&self, rng: &mut StdRng, model: &str, n: u64) -> Body {
        let mut pick = rng.random::<f64>() * self.total;
        let shape = self.shapes.iter().find(|s| {
            pick -= s.weight;
            pick < 0.0 && s.weight > 0.0
        });
        let shape = shape
            .or_else(|| self.shapes.iter().rev().find(|s| s.weight > 0.0))
            .unwrap_or(&self.shapes[0]);
        let words = shape.prompt_tokens.draw(rng).max(1);
        let max_tokens = shape
            .max_tokens
            .map_or(self.max_tokens, |m| m.draw(rng))
            .max(1);
        let mut messages = Vec::new();
        if let Some(system) = &shape.system {
            messages.push(json!({ "role": "system", "content": system }));
        }
        messages.push(json!({ "role": "user", "content": prompt(rng, n, words) }));
        let mut body = json!({ "model": model, "messages": messages, "max_tokens": max_tokens, "stream": shape.stream });
        if shape.stream {
            body["stream_options"] = json!({ "include_usage": true });
        }
        if let Some(tools) = &shape.tools {
            body["tools"] = Value::Array(tools.clone());
        }
        if let Some(choice) = &shape.tool_choice {
            body["tool_choice"] = choice.clone();
        }
        if let Some(obj) = body.as_object_mut() {
            obj.extend(shape.extra.clone());
        }
        Body {
            json: body,
            stream: shape.stream,
        }
    }
}

const WORDS: &[&str] = &[
    "the", "sea", "light", "house", "keeper", "night", "storm", "ship", "wind", "rock", "lamp",
    "oil", "fog", "bell", "rope", "boat", "north", "south", "east", "west", "cold", "warm", "long",
    "short", "old", "new", "red", "blue", "green", "white", "black", "day", "year", "time", "way",
    "man", "woman", "child", "world", "life", "hand", "part", "place", "case", "week", "point",
    "work", "fact", "group", "number", "water", "room", "mother", "area", "money", "story",
    "month", "lot", "right", "study", "book", "eye", "job", "word", "issue", "side", "kind",
    "head", "far", "small", "large", "next", "early", "young", "good", "high", "bad", "same",
    "able", "tree", "river", "road", "town", "bird", "fish", "stone", "sand", "wave", "star",
    "moon", "sun", "rain", "snow",
];

/// A prompt of `words` words: the request number, then random words (so no two prompts
/// share a prefix by chance).
fn prompt(rng: &mut StdRng, n: u64, words: u32) -> String {
    let mut text = format!("{n}:");
    for _ in 1..words {
        text.push(' ');
        text.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    text
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn a_mix_file_draws_its_shapes_by_weight() {
        let mix = Mix::parse(
            r#"
            [[request]]
            name = "short"
            weight = 3
            prompt_tokens = { min = 5, max = 10 }
            max_tokens = 8
            [[request]]
            weight = 1
            prompt_tokens = 40
            stream = false
            system = "Be brief."
            tools = [{ type = "function", function = { name = "f", parameters = { type = "object" } } }]
            tool_choice = "auto"
            extra = { sogni_tools = false, temperature = 0 }
            "#,
            16,
        )
        .unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let bodies: Vec<Body> = (0..4000).map(|i| mix.draw(&mut rng, "m", i)).collect();
        let streamed = bodies.iter().filter(|b| b.stream).count() as f64 / 4000.0;
        assert!((streamed - 0.75).abs() < 0.03, "{streamed}");
        for b in &bodies {
            let words = b.json["messages"].as_array().unwrap().last().unwrap()["content"]
                .as_str()
                .unwrap()
                .split(' ')
                .count();
            if b.stream {
                assert!((5..=10).contains(&words), "{words}");
                assert_eq!(b.json["max_tokens"], 8);
                assert_eq!(b.json["stream_options"]["include_usage"], true);
                assert!(b.json.get("tools").is_none());
            } else {
                assert_eq!(words, 40);
                assert_eq!(b.json["max_tokens"], 16, "--max-tokens fills in");
                assert_eq!(b.json["messages"][0]["content"], "Be brief.");
                assert_eq!(b.json["tools"][0]["function"]["name"], "f");
                assert_eq!(
                    (
                        b.json["tool_choice"].as_str(),
                        b.json["sogni_tools"].as_bool()
                    ),
                    (Some("auto"), Some(false))
                );
            }
        }
    }

    #[test]
    fn bad_mixes_say_what_is_wrong() {
        let err = |t: &str| Mix::parse(t, 8).unwrap_err().to_string();
        assert!(err("").contains("request"));
        assert!(err("[[request]]\nprompt_tokens = { min = 9, max = 2 }")
            .contains("min 9 is above max 2"));
        assert!(err("[[request]]\nweight = 0").contains("every weight is 0"));
        assert!(err("[[request]]\npromt_tokens = 3").contains("unknown field"));
    }

    #[test]
    fn normal_lengths_center_on_their_mean() {
        let mut rng = StdRng::seed_from_u64(1);
        let l = Length::Normal {
            mean: 200.0,
            stddev: 20.0,
        };
        let v: Vec<f64> = (0..20_000).map(|_| f64::from(l.draw(&mut rng))).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert!((mean - 200.0).abs() < 1.0, "{mean}");
    }
}
