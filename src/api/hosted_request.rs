//! The Sogni fields of a chat request: `sogni_tools` (which hosted tools are merged into
//! `tools`), `sogni_tool_execution` (whether the server runs them) and
//! `media_references` (inline media the tools may use, checked here). A custom tool named
//! like a hosted tool of the request's mode is a 400, whether that tool is offered now or
//! not, so a request's meaning never depends on which workers are up.

use serde_json::Value;

use super::chat_request::Fields;
use super::error::ApiError;
use super::tools::FunctionTool;
use crate::media::data_uri::{self, InlineMedia};
use crate::protocol::media::MediaKind;
use crate::tools::catalog::{catalog, Mode};

/// Most `media_references` a request may carry.
const MAX_REFERENCES: usize = 16;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hosted {
    pub mode: Mode,
    /// Run hosted calls on the server (`sogni_tool_execution`, default true).
    pub execute: bool,
    /// The hosted tools merged into the request's `tools`, offered now.
    pub offered: Vec<String>,
    /// `media_references`, checked, in order: the request's uploads.
    pub uploads: Vec<InlineMedia>,
}

impl Hosted {
    /// Whether the server runs a loop of rounds for this request.
    pub fn runs_tools(&self) -> bool {
        self.execute && !self.offered.is_empty()
    }
}

/// Reads the Sogni fields, and merges the hosted tools offered now (those whose pipeline
/// is in `pipelines`) into `tools`.
pub(super) fn parse(
    f: &Fields,
    tools: &mut Vec<FunctionTool>,
    pipelines: &[String],
) -> Result<Hosted, ApiError> {
    let mode = match f.get("sogni_tools") {
        None => Mode::default(),
        Some(v) => Mode::parse(v).ok_or_else(|| {
            ApiError::invalid(
                "sogni_tools",
                "`sogni_tools` must be true, false, \"creative-tools\", \"creative-agent\", \"rich\" or \"none\"",
            )
        })?,
    };
    let execute = f.bool("sogni_tool_execution")?.unwrap_or(true);
    for (i, t) in tools.iter().enumerate() {
        if catalog().of_mode(mode).any(|h| h.name == t.name) {
            return Err(ApiError::invalid(
                format!("tools[{i}].function.name"),
                format!(
                    "`{}` is the name of a hosted Sogni tool; rename the custom tool or set `sogni_tools` to false",
                    t.name
                ),
            ));
        }
    }
    let mut offered = Vec::new();
    for h in catalog().offered(mode, pipelines) {
        offered.push(h.name.clone());
        tools.push(h.function());
    }
    let uploads = parse_references(f.get("media_references"))?;
    Ok(Hosted {
        mode,
        execute,
        offered,
        uploads,
    })
}

/// `media_references`: `[{kind, url}]` (or `value`/`data` for the URI), inline only.
fn parse_references(v: Option<&Value>) -> Result<Vec<InlineMedia>, ApiError> {
    let items = match v {
        None => return Ok(Vec::new()),
        Some(Value::Array(a)) if a.len() <= MAX_REFERENCES => a,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                "media_references",
                format!("at most {MAX_REFERENCES} media references are allowed"),
            ))
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "media_references",
                "`media_references` must be an array",
            ))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("media_references[{i}]");
            let obj = item
                .as_object()
                .ok_or_else(|| ApiError::invalid(&path, format!("`{path}` must be an object")))?;
            let f = Fields {
                obj,
                path: path.clone(),
            };
            let kind = match f.string("kind")? {
                None => None,
                Some(k) => Some(MediaKind::parse(&k).ok_or_else(|| {
                    ApiError::invalid(f.param("kind"), "`kind` must be image, video or audio")
                })?),
            };
            let uri = match (f.string("url")?, f.string("value")?, f.string("data")?) {
                (Some(u), ..) | (None, Some(u), _) | (None, None, Some(u)) => u,
                (None, None, None) => {
                    return Err(ApiError::invalid(
                        f.param("url"),
                        format!("`{}` is required", f.param("url")),
                    ))
                }
            };
            data_uri::parse(&uri, kind).map_err(|e| {
                ApiError::invalid(f.param("url"), format!("`{}`: {e}", f.param("url")))
            })
        })
        .collect()
}
