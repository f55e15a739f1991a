//! Presigned media uploads (contract §4): a client asks for an upload URL for a slot (a job
//! id, a slot type such as `startingImage` or `referenceAudio`, and the content type it
//! will send), posts or puts the file there, and later asks for the slot's download URL,
//! which is a signed media URL that runs and workflows take in `media_references`.
//!
//! A slot names its asset (`{kind}-up{hash}` of the account and the slot), so an upload and
//! its download need no record between them. The upload is authorized by a policy, the
//! slot's asset id, account, content type, size limit and expiry, signed with the media
//! secret; the front checks it on `POST /v2/uploads` and `PUT /v1/uploads`. A store that
//! takes uploads itself (S3) gets S3's own presigned POST or PUT instead.

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::signing::UrlSigner;
use crate::protocol::media::MediaKind;

/// The largest upload.
pub const MAX_BYTES: u64 = 100 << 20;
/// How long an upload URL stays good.
pub const URL_SECS: u64 = 15 * 60;

const IMAGE_TYPES: [&str; 5] = [
    "image/png",
    "image/jpeg",
    "image/jpg",
    "image/webp",
    "image/gif",
];
const AUDIO_TYPES: [&str; 11] = [
    "audio/mpeg",
    "audio/mp3",
    "audio/wav",
    "audio/x-wav",
    "audio/wave",
    "audio/mp4",
    "audio/x-m4a",
    "audio/m4a",
    "audio/ogg",
    "audio/flac",
    "audio/webm",
];
const VIDEO_TYPES: [&str; 3] = ["video/mp4", "video/quicktime", "video/webm"];

/// The image slot types of `/v2/image/uploadUrl`.
fn image_slot(t: &str) -> bool {
    matches!(
        t,
        "startingImage"
            | "cnImage"
            | "referenceImage"
            | "referenceImageEnd"
            | "preview"
            | "complete"
    ) || t
        .strip_prefix("contextImage")
        .and_then(|n| n.parse::<u8>().ok())
        .is_some_and(|n| (1..=16).contains(&n))
}

/// Which route family a slot is asked for under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Image,
    Media,
}

/// One upload slot of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub account: String,
    pub job_id: String,
    pub slot_type: String,
    /// `imageId` (image previews) or `id` (media).
    pub sub_id: Option<String>,
    pub kind: MediaKind,
}

impl Slot {
    /// Reads a slot from its query parameters; the message says what is wrong.
    pub fn new(
        family: Family,
        account: &str,
        job_id: Option<&str>,
        slot_type: Option<&str>,
        sub_id: Option<&str>,
    ) -> Result<Self, (&'static str, String)> {
        let job_id = job_id.filter(|j| !j.is_empty() && j.len() <= 128).ok_or((
            "jobId",
            "`jobId` is required (up to 128 characters)".to_string(),
        ))?;
        let t = slot_type.ok_or(("type", "`type` is required".to_string()))?;
        let kind = match family {
            Family::Image if image_slot(t) => MediaKind::Image,
            Family::Image => {
                return Err(("type", format!("`{t}` is not an image slot (startingImage, cnImage, contextImage1..16, referenceImage, referenceImageEnd, preview, complete)")))
            }
            Family::Media => match t {
                "referenceAudio" => MediaKind::Audio,
                "referenceVideo" => MediaKind::Video,
                _ => return Err(("type", format!("`{t}` is not a media slot (referenceAudio, referenceVideo)"))),
            },
        };
        if matches!(t, "preview" | "complete") && sub_id.is_none() {
            return Err(("imageId", format!("a `{t}` slot needs `imageId`")));
        }
        if sub_id.is_some_and(|s| s.len() > 128) {
            return Err(("id", "the slot's id is up to 128 characters".into()));
        }
        Ok(Self {
            account: account.to_string(),
            job_id: job_id.to_string(),
            slot_type: t.to_string(),
            sub_id: sub_id.map(String::from),
            kind,
        })
    }

    /// The asset the slot's upload becomes.
    pub fn asset_id(&self) -> String {
        let name = format!(
            "{}\n{}\n{}\n{}",
            self.account,
            self.job_id,
            self.slot_type,
            self.sub_id.as_deref().unwrap_or_default()
        );
        let hash = crate::store::key_hash(&name);
        format!("{}-up{}", self.kind.as_str(), &hash[..24.min(hash.len())])
    }

    /// The content type checked against the slot's kind (`image/jpg` read as `image/jpeg`).
    pub fn content_type(&self, ct: Option<&str>) -> Result<String, String> {
        let ct = ct
            .map(|c| c.trim().to_ascii_lowercase())
            .ok_or_else(|| "`contentType` is required".to_string())?;
        let allowed: &[&str] = match self.kind {
            MediaKind::Image => &IMAGE_TYPES,
            MediaKind::Audio => &AUDIO_TYPES,
            MediaKind::Video => &VIDEO_TYPES,
        };
        if !allowed.contains(&ct.as_str()) {
            return Err(format!(
                "contentType `{ct}` is not one this slot takes ({})",
                allowed.join(", ")
            ));
        }
        Ok(if ct == "image/jpg" {
            "image/jpeg".into()
        } else {
            ct
        })
    }
}

/// What an upload URL allows: one asset, of one account, of one content type, up to a
/// size, until a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub asset: String,
    pub account: String,
    pub content_type: String,
    pub max_bytes: u64,
    /// Unix seconds.
    pub exp: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PolicyError {
    /// Not a policy this server signed (or it was changed).
    Forged,
    Expired,
}

impl Policy {
    /// The policy (base64url JSON) and its signature.
    pub fn seal(&self, signer: &UrlSigner) -> (String, String) {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        let sig = signer.sign(encoded.as_bytes());
        (encoded, sig)
    }

    /// The policy `encoded` is, if `sig` signs it and it has not expired at `now`.
    pub fn open(
        signer: &UrlSigner,
        encoded: &str,
        sig: &str,
        now: u64,
    ) -> Result<Self, PolicyError> {
        if !signer.signed(encoded.as_bytes(), sig) {
            return Err(PolicyError::Forged);
        }
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| PolicyError::Forged)?;
        let p: Self = serde_json::from_slice(&json).map_err(|_| PolicyError::Forged)?;
        if p.exp < now {
            return Err(PolicyError::Expired);
        }
        Ok(p)
    }
}

/// Whether bytes sniffed as `found` may be uploaded as `declared`: the same type, or the
/// same family where one container serves several (an MP4 of audio, WebM audio).
pub fn fits(declared: &str, found: &str) -> bool {
    let family = |t: &str| match t {
        "image/jpg" => "image/jpeg".to_string(),
        "audio/mp3" => "audio/mpeg".to_string(),
        "audio/x-wav" | "audio/wave" => "audio/wav".to_string(),
        "audio/x-m4a" | "audio/m4a" | "audio/mp4" | "video/mp4" | "video/quicktime" => "mp4".into(),
        "audio/webm" | "video/webm" => "webm".into(),
        t => t.to_string(),
    };
    family(declared) == family(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::data_uri::mime_of;

    fn slot(t: &str) -> Slot {
        Slot::new(Family::Image, "acct", Some("job-1"), Some(t), None).expect("slot")
    }

    #[test]
    fn slots_name_one_asset_per_account_and_slot() {
        let a = slot("startingImage");
        assert_eq!(a.asset_id(), slot("startingImage").asset_id());
        assert_ne!(a.asset_id(), slot("contextImage3").asset_id());
        let other = Slot::new(
            Family::Image,
            "other",
            Some("job-1"),
            Some("startingImage"),
            None,
        )
        .expect("slot");
        assert_ne!(a.asset_id(), other.asset_id());
        assert!(crate::media::store::valid_id(&a.asset_id()));
        assert!(Slot::new(Family::Image, "a", Some("j"), Some("contextImage17"), None).is_err());
        assert!(Slot::new(Family::Image, "a", Some("j"), Some("preview"), None).is_err());
        assert!(Slot::new(Family::Media, "a", Some("j"), Some("startingImage"), None).is_err());
        assert_eq!(a.content_type(Some("image/JPG")), Ok("image/jpeg".into()));
        assert!(a.content_type(Some("application/pdf")).is_err());
    }

    #[test]
    fn a_policy_opens_only_unchanged_and_unexpired() {
        let signer = UrlSigner::new(b"secret");
        let p = Policy {
            asset: "image-up1".into(),
            account: "a".into(),
            content_type: "image/png".into(),
            max_bytes: 10,
            exp: 100,
        };
        let (enc, sig) = p.seal(&signer);
        assert_eq!(Policy::open(&signer, &enc, &sig, 50), Ok(p.clone()));
        assert_eq!(
            Policy::open(&signer, &enc, &sig, 101),
            Err(PolicyError::Expired)
        );
        let mut other = p;
        other.max_bytes = 1 << 40;
        let (forged, _) = other.seal(&UrlSigner::new(b"guess"));
        assert_eq!(
            Policy::open(&signer, &forged, &sig, 50),
            Err(PolicyError::Forged)
        );
        assert_eq!(
            Policy::open(&UrlSigner::new(b"other"), &enc, &sig, 50),
            Err(PolicyError::Forged)
        );
    }

    #[test]
    fn sniffing_tells_types_apart() {
        assert_eq!(mime_of(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(mime_of(b"RIFF\0\0\0\0WAVEfmt "), Some("audio/wav"));
        assert_eq!(mime_of(b"\0\0\0\x18ftypisom"), Some("video/mp4"));
        assert_eq!(mime_of(b"%PDF-1.4"), None);
        assert!(fits("image/jpg", "image/jpeg") && fits("audio/mp4", "video/mp4"));
        assert!(!fits("image/png", "image/jpeg"));
    }
}
