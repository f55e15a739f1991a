//! The messages of a media job (an image, video or music tool call run on a media worker):
//! what the session's tool executor asks for, and what the worker reports. A media job
//! travels as a [`super::JobSpec`] whose `model` is the pipeline it needs and whose
//! `media` holds the task, so the one coordinator places it like any other job (on a
//! worker of kind `media` that lists the pipeline).

use serde::{Deserialize, Serialize};

/// What a hosted tool call asks a media worker to make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaTask {
    /// The hosted tool the model called.
    pub tool: String,
    /// The call's arguments (a JSON object's text), names in snake_case, media resolved.
    pub arguments: String,
    /// Media the job reads, already in the media store.
    pub inputs: Vec<MediaInput>,
    /// The same on every attempt of the job: a worker that finds a backend job recorded
    /// under it resumes that job instead of starting (and billing) another.
    pub idempotency_key: String,
}

/// One input: the argument it fills (`source_image`, `reference_audio`, ...) and the asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaInput {
    pub role: String,
    pub asset: Asset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MediaKind {
    Image,
    Video,
    Audio,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Video => "video",
            Self::Audio => "audio",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "image" => Some(Self::Image),
            "video" => Some(Self::Video),
            "audio" => Some(Self::Audio),
            _ => None,
        }
    }
}

/// A stored piece of media.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub id: String,
    pub account_id: String,
    pub kind: MediaKind,
    pub mime: String,
    pub size_bytes: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub duration_ms: Option<u64>,
}

/// What a media worker reports about an attempt after `Accepted`: progress, then one
/// `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MediaEvent {
    /// How far the backend is, 0 to 1 (a hint: the backend's result is the truth).
    Progress { fraction: f32 },
    /// The outputs, stored.
    Done { assets: Vec<Asset> },
    /// The job failed; `retryable` when trying again may succeed (the backend restarted,
    /// timed out).
    Failed {
        error_type: String,
        message: String,
        retryable: bool,
    },
}
