//! The `openai-images` backend: an OpenAI-style images API (`POST /v1/images/generations`,
//! and `POST /v1/images/edits` with the source image as a multipart file), asked for
//! base64 results. It answers synchronously, so there is no backend job to wait for or
//! reconcile: a retry after a crash asks again.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use super::backend::{BackendError, BackendFuture, BackendJob, MediaBackend, Output, Started};
use crate::protocol::media::MediaKind;

pub struct OpenAiImages {
    base: String,
    http: reqwest::Client,
}

impl OpenAiImages {
    pub fn new(base: String) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(600))
            .build()?;
        Ok(Self { base, http })
    }

    async fn call(&self, job: &BackendJob) -> Result<Vec<Output>, BackendError> {
        let prompt = job.arguments["prompt"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let n = job.arguments["number_of_variations"]
            .as_u64()
            .unwrap_or(1)
            .clamp(1, 10);
        let size = match (
            job.arguments["width"].as_u64(),
            job.arguments["height"].as_u64(),
        ) {
            (Some(w), Some(h)) => format!("{w}x{h}"),
            _ => "1024x1024".into(),
        };
        let source = job.inputs.iter().find(|(role, ..)| role == "source_image");
        let req = match (job.pipeline.as_str(), source) {
            ("image_edit", Some((_, asset, bytes))) => {
                let part = reqwest::multipart::Part::bytes(bytes.clone())
                    .file_name(format!("{}.png", asset.id))
                    .mime_str(&asset.mime)
                    .map_err(|e| BackendError::invalid(e.to_string()))?;
                let form = reqwest::multipart::Form::new()
                    .part("image", part)
                    .text("prompt", prompt)
                    .text("n", n.to_string())
                    .text("size", size)
                    .text("response_format", "b64_json");
                self.http
                    .post(format!("{}/v1/images/edits", self.base))
                    .multipart(form)
            }
            ("image_edit", None) => return Err(BackendError::invalid("an edit needs a source image")),
            _ => self
                .http
                .post(format!("{}/v1/images/generations", self.base))
                .json(&json!({ "prompt": prompt, "n": n, "size": size, "response_format": "b64_json" })),
        };
        let r = req.send().await.map_err(|e| {
            BackendError::unavailable(format!("the images API could not be reached: {e}"))
        })?;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if status.is_client_error() {
            let msg = body["error"]["message"].as_str().unwrap_or("refused");
            return Err(BackendError::invalid(format!("the images API: {msg}")));
        }
        if !status.is_success() {
            return Err(BackendError::unavailable(format!(
                "the images API answered {status}"
            )));
        }
        let mut out = Vec::new();
        for item in body["data"].as_array().into_iter().flatten() {
            let b64 = item["b64_json"]
                .as_str()
                .ok_or_else(|| BackendError::failed("the images API returned no b64_json"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| BackendError::failed("the images API returned bad base64"))?;
            out.push(Output {
                kind: MediaKind::Image,
                mime: "image/png".into(),
                bytes,
            });
        }
        if out.is_empty() {
            return Err(BackendError::failed("the images API returned no images"));
        }
        Ok(out)
    }
}

impl MediaBackend for OpenAiImages {
    fn url(&self) -> &str {
        &self.base
    }

    fn pipelines(&self) -> Vec<String> {
        vec!["image_edit".into(), "text_to_image".into()]
    }

    fn start<'a>(
        &'a self,
        job: &'a BackendJob,
    ) -> BackendFuture<'a, Result<Started, BackendError>> {
        Box::pin(async move { self.call(job).await.map(Started::Done) })
    }

    fn wait<'a>(
        &'a self,
        _: &'a str,
        _: &'a (dyn Fn(f32) + Send + Sync),
    ) -> BackendFuture<'a, Result<Vec<Output>, BackendError>> {
        Box::pin(async {
            Err(BackendError::unavailable(
                "the images API keeps no jobs to wait for; the call is made again",
            ))
        })
    }

    fn cancel<'a>(&'a self, _: &'a str) -> BackendFuture<'a, ()> {
        Box::pin(async {})
    }
}
