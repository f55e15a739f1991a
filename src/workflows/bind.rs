//! A step's arguments once its inputs are ready: each `dependsOn` binding puts its source's
//! output where the step wants it, as an index into the step's media context (`image_index`
//! and the like) or as a signed URL the context resolves to the same asset (`image_url`,
//! `artifact_url`). The step's media context holds the workflow's uploads (`$input_media`,
//! indices -1, -2, ...) and the outputs bound by index (0, 1, ... in binding order).

use serde_json::{json, Map, Value};

use super::plan::{Binding, Step, INPUT_MEDIA};
use super::state::WorkflowState;
use crate::media::signing::UrlSigner;
use crate::protocol::media::Asset;
use crate::tools::media_context::MediaContext;
use crate::tools::results::ToolError;

pub struct Bound {
    pub arguments: Map<String, Value>,
    pub media: MediaContext,
    /// What the media context holds, by index, for an interactive step's model.
    pub described: String,
}

fn missing(b: &Binding, why: String) -> ToolError {
    ToolError::new(
        "ASSET_NOT_FOUND",
        format!(
            "binding `{}` from `{}`: {why}",
            b.target_argument, b.source_step_id
        ),
        false,
    )
}

/// The asset binding `b` takes, `None` when its source failed and it is not required.
fn source<'a>(b: &Binding, state: &'a WorkflowState) -> Result<Option<&'a Asset>, ToolError> {
    if b.source_step_id == INPUT_MEDIA {
        let k = b.source_artifact_index.unwrap_or(0);
        return state
            .uploads
            .get(k)
            .map(Some)
            .ok_or_else(|| missing(b, format!("there is no media_references item {k}")));
    }
    let st = state
        .step(&b.source_step_id)
        .ok_or_else(|| missing(b, "no such step".into()))?;
    if st.status != "completed" {
        return if b.required {
            Err(missing(b, format!("the step is {}", st.status)))
        } else {
            Ok(None)
        };
    }
    let found = match (&b.source_artifact_id, b.source_artifact_index) {
        (Some(id), _) => st.assets.iter().find(|a| &a.id == id),
        (None, i) => st.assets.get(i.unwrap_or(0)),
    };
    found.map(Some).ok_or_else(|| {
        missing(
            b,
            format!(
                "the step made {} output(s), none of them the one named",
                st.assets.len()
            ),
        )
    })
}

/// Binds `step`'s inputs from the workflow's state; `seed` replaces its seed (a reseed).
pub fn bind(
    step: &Step,
    state: &WorkflowState,
    signer: &UrlSigner,
    origin: &str,
    seed: Option<u64>,
) -> Result<Bound, ToolError> {
    let def = step.def().ok_or_else(|| {
        ToolError::new(
            "PARAMETER_INVALID",
            format!("no hosted tool `{}`", step.tool_name),
            false,
        )
    })?;
    let mut media = MediaContext::default();
    for u in &state.uploads {
        media.upload(u.clone());
    }
    let mut lines: Vec<String> = Vec::new();
    let mut seen = [0usize; 3];
    for u in &state.uploads {
        let n = &mut seen[u.kind as usize];
        *n += 1;
        lines.push(format!("{} index -{n}: an upload", u.kind.as_str()));
    }
    let mut arguments = step.arguments.clone();
    if let Some(seed) = seed.filter(|_| def.parameters["properties"].get("seed").is_some()) {
        arguments.insert("seed".into(), json!(seed));
    }
    let now = crate::clock::unix_secs() as u64;
    for b in &step.depends_on {
        let Some(asset) = source(b, state)? else {
            continue;
        };
        let value = if b.transform.is_index() {
            if b.source_step_id == INPUT_MEDIA {
                let k = state
                    .uploads
                    .iter()
                    .filter(|u| u.kind == asset.kind)
                    .position(|u| u.id == asset.id)
                    .unwrap_or(0);
                json!(-(k as i64) - 1)
            } else {
                let i = media.add_generated(std::slice::from_ref(asset))[0];
                lines.push(format!(
                    "{} index {i}: the output of step `{}`",
                    asset.kind.as_str(),
                    b.source_step_id
                ));
                json!(i)
            }
        } else {
            let url = signer.url(origin, &asset.id, now);
            media.bind_url(url.clone(), asset.clone());
            json!(url)
        };
        if def.parameters["properties"][&b.target_argument]["type"] == "array" {
            let list = arguments
                .entry(b.target_argument.clone())
                .or_insert_with(|| json!([]));
            if let Some(l) = list.as_array_mut() {
                l.push(value);
            }
        } else {
            arguments.insert(b.target_argument.clone(), value);
        }
    }
    let described = if lines.is_empty() {
        String::new()
    } else {
        format!("Media you can name by index:\n{}", lines.join("\n"))
    };
    Ok(Bound {
        arguments,
        media,
        described,
    })
}
