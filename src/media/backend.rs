//! What a media worker runs jobs on: a [`MediaBackend`] (ComfyUI, or an OpenAI-style images
//! API), named on the command line as `KIND=URL`. A job is started (ComfyUI answers with its
//! own job id at once; a synchronous API answers with the outputs), then waited for, with
//! progress, and can be cancelled. The worker records the backend's job id between the
//! two, so a retry of the job waits for that job instead of starting another.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::graphs::Graphs;
use crate::protocol::media::{Asset, MediaKind};

pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A job as a backend gets it.
pub struct BackendJob {
    pub pipeline: String,
    pub tool: String,
    /// snake_case arguments.
    pub arguments: Map<String, Value>,
    /// Input media: role, asset and its bytes.
    pub inputs: Vec<(String, Asset, Vec<u8>)>,
    /// The job's idempotency key.
    pub key: String,
}

/// One produced file.
#[derive(Debug, Clone)]
pub struct Output {
    pub kind: MediaKind,
    pub mime: String,
    pub bytes: Vec<u8>,
}

/// A failure, as the model will see it (`error_type` is one of the hosted tools' error
/// types).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct BackendError {
    pub error_type: &'static str,
    pub message: String,
    pub retryable: bool,
}

impl BackendError {
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            error_type: "MODEL_UNAVAILABLE",
            message: message.into(),
            retryable: true,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            error_type: "PARAMETER_INVALID",
            message: message.into(),
            retryable: false,
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            error_type: "GENERATION_FAILED",
            message: message.into(),
            retryable: false,
        }
    }
}

pub enum Started {
    /// The backend took the job under this id; wait for it.
    Submitted(String),
    /// The backend answered with the outputs at once.
    Done(Vec<Output>),
}

pub trait MediaBackend: Send + Sync {
    /// The backend's base URL (what dispatch records name it by).
    fn url(&self) -> &str;
    fn pipelines(&self) -> Vec<String>;
    fn start<'a>(&'a self, job: &'a BackendJob)
        -> BackendFuture<'a, Result<Started, BackendError>>;
    /// Waits for a started job; `progress` hears fractions 0 to 1 as they come.
    fn wait<'a>(
        &'a self,
        backend_job: &'a str,
        progress: &'a (dyn Fn(f32) + Send + Sync),
    ) -> BackendFuture<'a, Result<Vec<Output>, BackendError>>;
    /// Stops a started job (best effort).
    fn cancel<'a>(&'a self, backend_job: &'a str) -> BackendFuture<'a, ()>;
}

/// `KIND=URL` from the command line.
pub fn parse_backend(spec: &str, graphs: &Arc<Graphs>) -> anyhow::Result<Arc<dyn MediaBackend>> {
    let (kind, url) = spec.split_once('=').ok_or_else(|| {
        anyhow::anyhow!("a media backend is KIND=URL (comfyui=http://HOST:PORT or openai-images=URL), not `{spec}`")
    })?;
    let url = url.trim_end_matches('/').to_string();
    anyhow::ensure!(
        url.starts_with("http://") || url.starts_with("https://"),
        "the media backend URL `{url}` must start with http:// or https://"
    );
    Ok(match kind {
        "comfyui" => Arc::new(super::comfyui::ComfyUi::new(url, Arc::clone(graphs))?),
        "openai-images" => Arc::new(super::openai_images::OpenAiImages::new(url)?),
        other => anyhow::bail!("unknown media backend kind `{other}` (comfyui or openai-images)"),
    })
}

/// The kind and type of a produced file, by its name (ComfyUI reports names) or its bytes.
pub fn classify(filename: &str, bytes: &[u8]) -> Option<(MediaKind, &'static str)> {
    let ext = filename
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let by_ext = match ext.as_str() {
        "png" => Some((MediaKind::Image, "image/png")),
        "jpg" | "jpeg" => Some((MediaKind::Image, "image/jpeg")),
        "webp" => Some((MediaKind::Image, "image/webp")),
        "mp4" => Some((MediaKind::Video, "video/mp4")),
        "webm" => Some((MediaKind::Video, "video/webm")),
        "mov" => Some((MediaKind::Video, "video/quicktime")),
        "wav" => Some((MediaKind::Audio, "audio/wav")),
        "flac" => Some((MediaKind::Audio, "audio/flac")),
        "mp3" => Some((MediaKind::Audio, "audio/mpeg")),
        "opus" | "ogg" => Some((MediaKind::Audio, "audio/ogg")),
        _ => None,
    };
    by_ext.or_else(|| {
        super::data_uri::sniff(bytes).map(|k| {
            let mime = match k {
                MediaKind::Image => "image/png",
                MediaKind::Video => "video/mp4",
                MediaKind::Audio => "audio/wav",
            };
            (k, mime)
        })
    })
}
