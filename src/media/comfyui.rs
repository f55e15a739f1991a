//! The ComfyUI backend, written against ComfyUI's documented HTTP API so a real ComfyUI
//! works unchanged: inputs go up through `POST /upload/image` (video and audio too, as
//! ComfyUI's own frontend does), the pipeline's graph with the arguments filled in goes to
//! `POST /prompt` under a prompt id derived from the job's idempotency key, and the result
//! is read from `GET /history/{id}` (empty until done), its files from `GET /view`.
//! Progress comes from `/ws?clientId=` but is only a hint: history is the truth. ComfyUI
//! keeps history in memory, so a prompt that is neither in the history nor in the queue was
//! lost (ComfyUI restarted): a retryable failure. Cancel interrupts the prompt if it runs
//! and deletes it from the queue if it waits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::backend::{
    classify, BackendError, BackendFuture, BackendJob, MediaBackend, Output, Started,
};
use super::graphs::Graphs;

/// How often history is polled while a prompt runs.
const POLL: Duration = Duration::from_millis(100);
/// Longest a prompt may take.
const JOB_TIMEOUT: Duration = Duration::from_secs(3600);
/// Consecutive polls that find a prompt in neither history nor queue before it counts as
/// lost (a prompt moves from the queue to the history between two requests).
const LOST_AFTER: u32 = 3;

pub struct ComfyUi {
    base: String,
    http: reqwest::Client,
    graphs: Arc<Graphs>,
}

impl ComfyUi {
    pub fn new(base: String, graphs: Arc<Graphs>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(300))
            .build()?;
        Ok(Self { base, http, graphs })
    }

    async fn upload(
        &self,
        name: String,
        mime: &str,
        bytes: Vec<u8>,
    ) -> Result<String, BackendError> {
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(name)
            .mime_str(mime)
            .map_err(|e| BackendError::invalid(e.to_string()))?;
        let form = reqwest::multipart::Form::new()
            .part("image", part)
            .text("type", "input")
            .text("overwrite", "true");
        let r: Value = self
            .json(
                self.http
                    .post(format!("{}/upload/image", self.base))
                    .multipart(form),
            )
            .await?;
        let name = r["name"].as_str().unwrap_or_default();
        match r["subfolder"].as_str().unwrap_or_default() {
            "" => Ok(name.to_string()),
            sub => Ok(format!("{sub}/{name}")),
        }
    }

    async fn json(&self, req: reqwest::RequestBuilder) -> Result<Value, BackendError> {
        let r = req.send().await.map_err(unreachable_backend)?;
        let status = r.status();
        let body = r.bytes().await.map_err(unreachable_backend)?;
        if status.as_u16() == 400 {
            return Err(BackendError::invalid(format!(
                "ComfyUI refused the job: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        if !status.is_success() {
            return Err(BackendError::unavailable(format!(
                "ComfyUI answered {status}"
            )));
        }
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body)
            .map_err(|e| BackendError::unavailable(format!("ComfyUI's answer is not JSON: {e}")))
    }

    /// The finished history entry of `id`, if it is finished.
    async fn history(&self, id: &str) -> Result<Option<Value>, BackendError> {
        let h = self
            .json(self.http.get(format!("{}/history/{id}", self.base)))
            .await?;
        Ok(h.get(id).cloned())
    }

    /// Whether `id` waits or runs.
    async fn queued(&self, id: &str) -> Result<bool, BackendError> {
        let q = self
            .json(self.http.get(format!("{}/queue", self.base)))
            .await?;
        let holds = |list: &Value| {
            list.as_array().is_some_and(|items| {
                items
                    .iter()
                    .any(|item| item.get(1).and_then(Value::as_str) == Some(id))
            })
        };
        Ok(holds(&q["queue_running"]) || holds(&q["queue_pending"]))
    }

    async fn outputs(&self, entry: &Value) -> Result<Vec<Output>, BackendError> {
        let status = &entry["status"];
        if status["status_str"] == "error" {
            let detail = status["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m[0] == "execution_error")
                .and_then(|m| m[1]["exception_message"].as_str())
                .unwrap_or("the workflow failed");
            return Err(BackendError::failed(format!("ComfyUI: {detail}")));
        }
        let mut out = Vec::new();
        let nodes = entry["outputs"].as_object().cloned().unwrap_or_default();
        for (_, ui) in nodes {
            for key in ["images", "gifs", "video", "audio"] {
                for file in ui[key].as_array().into_iter().flatten() {
                    let name = file["filename"].as_str().unwrap_or_default();
                    if name.is_empty() || file["type"] == "temp" {
                        continue;
                    }
                    let bytes = self.view(file).await?;
                    let (kind, mime) = classify(name, &bytes).ok_or_else(|| {
                        BackendError::failed(format!(
                            "ComfyUI produced `{name}`, of no known media type"
                        ))
                    })?;
                    out.push(Output {
                        kind,
                        mime: mime.into(),
                        bytes,
                    });
                }
            }
        }
        if out.is_empty() {
            return Err(BackendError::failed("the workflow produced no media"));
        }
        Ok(out)
    }

    async fn view(&self, file: &Value) -> Result<Vec<u8>, BackendError> {
        let query = [
            ("filename", file["filename"].as_str().unwrap_or_default()),
            ("subfolder", file["subfolder"].as_str().unwrap_or_default()),
            ("type", file["type"].as_str().unwrap_or("output")),
        ];
        let r = self
            .http
            .get(format!("{}/view", self.base))
            .query(&query)
            .send()
            .await
            .map_err(unreachable_backend)?;
        if !r.status().is_success() {
            return Err(BackendError::unavailable(format!(
                "ComfyUI could not serve an output: {}",
                r.status()
            )));
        }
        Ok(r.bytes().await.map_err(unreachable_backend)?.to_vec())
    }

    /// Relays `progress` frames of prompt `id` until the socket closes (or is dropped).
    async fn watch(&self, id: &str, progress: &(dyn Fn(f32) + Send + Sync)) {
        let ws = format!(
            "{}/ws?clientId={}",
            self.base.replacen("http", "ws", 1),
            client_id(id)
        );
        let Ok((mut socket, _)) = tokio_tungstenite::connect_async(ws.as_str()).await else {
            return;
        };
        while let Some(Ok(frame)) = socket.next().await {
            let Ok(text) = frame.to_text() else { continue };
            let Ok(v) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            let d = &v["data"];
            if v["type"] == "progress" && d["prompt_id"] == id {
                let (value, max) = (d["value"].as_f64(), d["max"].as_f64());
                if let (Some(value), Some(max)) = (value, max.filter(|m| *m > 0.0)) {
                    progress((value / max).clamp(0.0, 1.0) as f32);
                }
            }
        }
    }
}

fn unreachable_backend(e: reqwest::Error) -> BackendError {
    BackendError::unavailable(format!("ComfyUI could not be reached: {e}"))
}

/// The prompt id of a job: a UUID made from its idempotency key, so a retry that lost its
/// record still finds the prompt.
fn prompt_id(key: &str) -> String {
    let d = Sha256::digest(key.as_bytes());
    let h: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn client_id(prompt_id: &str) -> String {
    format!("supernet-{prompt_id}")
}

fn extension(mime: &str) -> &'static str {
    match mime {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        "audio/wav" | "audio/x-wav" | "audio/wave" => "wav",
        "audio/mpeg" | "audio/mp3" => "mp3",
        "audio/flac" => "flac",
        "audio/ogg" => "ogg",
        "video/webm" => "webm",
        "video/quicktime" => "mov",
        _ => "mp4",
    }
}

impl MediaBackend for ComfyUi {
    fn url(&self) -> &str {
        &self.base
    }

    fn pipelines(&self) -> Vec<String> {
        self.graphs.names()
    }

    fn start<'a>(
        &'a self,
        job: &'a BackendJob,
    ) -> BackendFuture<'a, Result<Started, BackendError>> {
        Box::pin(async move {
            let id = prompt_id(&job.key);
            // Submitted before, and the record of it lost: wait for that prompt.
            if self.history(&id).await?.is_some() || self.queued(&id).await? {
                return Ok(Started::Submitted(id));
            }
            let pipeline = self.graphs.get(&job.pipeline).ok_or_else(|| {
                BackendError::unavailable(format!("this worker has no `{}` graph", job.pipeline))
            })?;
            let mut files = HashMap::new();
            for (role, asset, bytes) in &job.inputs {
                let name = format!("{}-{role}.{}", asset.id, extension(&asset.mime));
                let stored = self.upload(name, &asset.mime, bytes.clone()).await?;
                files.insert(role.clone(), stored);
            }
            let graph = pipeline
                .fill(&job.arguments, &files)
                .map_err(|e| BackendError::invalid(e.0))?;
            let body = json!({ "prompt": graph, "client_id": client_id(&id), "prompt_id": id });
            let r = self
                .json(self.http.post(format!("{}/prompt", self.base)).json(&body))
                .await?;
            // An older ComfyUI picks its own id.
            let given = r["prompt_id"].as_str().unwrap_or(&id).to_string();
            Ok(Started::Submitted(given))
        })
    }

    fn wait<'a>(
        &'a self,
        id: &'a str,
        progress: &'a (dyn Fn(f32) + Send + Sync),
    ) -> BackendFuture<'a, Result<Vec<Output>, BackendError>> {
        Box::pin(async move {
            let watch = self.watch(id, progress);
            let poll = async {
                let started = Instant::now();
                let mut missing = 0;
                loop {
                    if let Some(entry) = self.history(id).await? {
                        return self.outputs(&entry).await;
                    }
                    if self.queued(id).await? {
                        missing = 0;
                    } else {
                        missing += 1;
                        if missing >= LOST_AFTER {
                            return Err(BackendError::unavailable(
                                "ComfyUI lost the job (it is in neither its history nor its queue: restarted?)",
                            ));
                        }
                    }
                    if started.elapsed() > JOB_TIMEOUT {
                        return Err(BackendError::unavailable("the job took too long"));
                    }
                    tokio::time::sleep(POLL).await;
                }
            };
            tokio::pin!(watch);
            tokio::pin!(poll);
            tokio::select! {
                r = &mut poll => r,
                // The socket is gone: poll on alone.
                () = &mut watch => poll.await,
            }
        })
    }

    fn cancel<'a>(&'a self, id: &'a str) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let interrupt = self
                .http
                .post(format!("{}/interrupt", self.base))
                .json(&json!({ "prompt_id": id }))
                .send();
            let delete = self
                .http
                .post(format!("{}/queue", self.base))
                .json(&json!({ "delete": [id] }))
                .send();
            let (a, b) = futures_util::future::join(interrupt, delete).await;
            if let Err(e) = a.and(b) {
                tracing::warn!(prompt = id, "cancelling on ComfyUI: {e}");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_ids_are_uuids_fixed_by_the_key() {
        let a = prompt_id("job-1.media");
        assert_eq!(a, prompt_id("job-1.media"));
        assert_ne!(a, prompt_id("job-2.media"));
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }
}
