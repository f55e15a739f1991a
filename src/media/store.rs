//! Where media lives: a [`MediaStore`] of named objects (local files under `--data-dir` for
//! `serve`; S3-compatible storage for a cluster), and [`Assets`], the typed layer the rest
//! of the code uses: assets (bytes and metadata, each owned by an account), the records of
//! media jobs dispatched to a backend (so a retry reconciles instead of generating twice),
//! and hosted-tool workflow records.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::protocol::media::{Asset, MediaKind};

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, MediaStoreError>> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum MediaStoreError {
    #[error("the media store failed: {0}")]
    Backend(String),
    #[error("a stored record is unreadable: {0}")]
    Corrupt(String),
}

/// Named objects. Keys are `/`-separated paths of letters, digits, `-`, `_` and `.`.
pub trait MediaStore: Send + Sync {
    fn put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> StoreFuture<'a, ()>;
    /// The object, or `None` when there is none.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;
    /// Where a client posts an object straight into the store (a presigned POST: the URL
    /// and the form fields before the file), if the store takes such uploads; `None` and
    /// the front takes the upload itself.
    fn presigned_post(
        &self,
        _upload: &PresignedUpload,
    ) -> Option<Result<PostForm, MediaStoreError>> {
        None
    }
    /// A URL a client PUTs an object to, if the store takes such uploads.
    fn presigned_put<'a>(
        &'a self,
        _upload: &'a PresignedUpload,
    ) -> Option<StoreFuture<'a, String>> {
        None
    }
}

/// A presigned POST: where to post, and the form fields before `file`.
#[derive(Debug, Clone)]
pub struct PostForm {
    pub url: String,
    pub fields: Vec<(String, String)>,
}

/// An upload a store may let a client make directly.
#[derive(Debug, Clone)]
pub struct PresignedUpload {
    pub key: String,
    pub content_type: String,
    pub max_bytes: u64,
    pub expires_secs: u64,
}

/// Files under a folder; each put is written to a temporary file and renamed into place,
/// so a crash never leaves half an object.
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        Ok(Self { root: root.into() })
    }

    fn path(&self, key: &str) -> Result<PathBuf, MediaStoreError> {
        let safe = !key.is_empty()
            && key.split('/').all(|part| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            });
        if !safe {
            return Err(MediaStoreError::Backend(format!("bad object key {key:?}")));
        }
        Ok(self.root.join(key))
    }
}

fn backend(e: impl std::fmt::Display) -> MediaStoreError {
    MediaStoreError::Backend(e.to_string())
}

impl MediaStore for LocalStore {
    fn put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let path = self.path(key)?;
            tokio::task::spawn_blocking(move || {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let tmp = path.with_extension(format!("tmp{}", crate::clock::unix_nanos()));
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, &path)
            })
            .await
            .map_err(backend)?
            .map_err(backend)
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let path = self.path(key)?;
            tokio::task::spawn_blocking(move || match std::fs::read(path) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(backend(e)),
            })
            .await
            .map_err(backend)?
        })
    }
}

/// What a media job dispatched to a backend left behind: enough for a retry to find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Dispatch {
    /// The backend it went to (its URL).
    pub backend: String,
    /// The backend's own id of the job (ComfyUI's `prompt_id`).
    pub backend_job: String,
    /// The outputs, once stored: a retry after that returns them as they are.
    pub assets: Option<Vec<Asset>>,
}

/// The typed view of a media store.
#[derive(Clone)]
pub struct Assets {
    store: Arc<dyn MediaStore>,
}

/// A new asset's bytes and what is known of them.
pub struct NewAsset {
    pub account_id: String,
    pub kind: MediaKind,
    pub mime: String,
    pub bytes: Vec<u8>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub duration_ms: Option<u64>,
}

impl Assets {
    pub fn new(store: Arc<dyn MediaStore>) -> Self {
        Self { store }
    }

    /// Stores an asset under a fresh id: the bytes first, then the metadata that makes it
    /// visible.
    pub async fn save(&self, new: NewAsset) -> Result<Asset, MediaStoreError> {
        let id = format!(
            "{}-{}",
            new.kind.as_str(),
            crate::ids::random_hex(12).map_err(backend)?
        );
        self.save_as(id, new).await
    }

    /// Stores an asset under `id` (an upload's, which its slot names), replacing any there.
    pub async fn save_as(&self, id: String, new: NewAsset) -> Result<Asset, MediaStoreError> {
        let asset = Asset {
            id,
            account_id: new.account_id,
            kind: new.kind,
            mime: new.mime,
            size_bytes: new.bytes.len() as u64,
            width: new.width,
            height: new.height,
            duration_ms: new.duration_ms,
        };
        self.store
            .put(&format!("assets/{}/data", asset.id), new.bytes)
            .await?;
        self.put_json(&format!("assets/{}/meta.json", asset.id), &asset)
            .await?;
        Ok(asset)
    }

    /// An asset's metadata; `None` for an unknown (or malformed) id.
    pub async fn meta(&self, id: &str) -> Result<Option<Asset>, MediaStoreError> {
        if !valid_id(id) {
            return Ok(None);
        }
        self.get_json(&format!("assets/{id}/meta.json")).await
    }

    /// Records the metadata of an asset whose bytes a client put straight into the store
    /// (an S3 presigned upload).
    pub async fn describe(&self, asset: &Asset) -> Result<(), MediaStoreError> {
        self.put_json(&format!("assets/{}/meta.json", asset.id), asset)
            .await
    }

    /// The store key of an asset's bytes.
    pub fn data_key(id: &str) -> String {
        format!("assets/{id}/data")
    }

    /// The store itself (for presigned uploads).
    pub fn store(&self) -> &Arc<dyn MediaStore> {
        &self.store
    }

    /// An asset's bytes.
    pub async fn bytes(&self, id: &str) -> Result<Option<Vec<u8>>, MediaStoreError> {
        if !valid_id(id) {
            return Ok(None);
        }
        self.store.get(&format!("assets/{id}/data")).await
    }

    pub async fn dispatch(&self, key: &str) -> Result<Option<Dispatch>, MediaStoreError> {
        self.get_json(&dispatch_key(key)).await
    }

    pub async fn record_dispatch(&self, key: &str, d: &Dispatch) -> Result<(), MediaStoreError> {
        self.put_json(&dispatch_key(key), d).await
    }

    /// Writes a JSON record (a workflow's) under `key`.
    pub async fn put_json<T: Serialize>(&self, key: &str, v: &T) -> Result<(), MediaStoreError> {
        let bytes = serde_json::to_vec(v).map_err(|e| MediaStoreError::Corrupt(e.to_string()))?;
        self.store.put(key, bytes).await
    }

    pub async fn get_json<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, MediaStoreError> {
        match self.store.get(key).await? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| MediaStoreError::Corrupt(format!("{key}: {e}"))),
        }
    }
}

/// Idempotency keys come from job ids (hex and dashes); anything else is hashed.
fn dispatch_key(key: &str) -> String {
    if valid_id(key) {
        format!("dispatch/{key}.json")
    } else {
        format!("dispatch/{}.json", crate::store::key_hash(key))
    }
}

/// Ids are short runs of letters, digits, `-`, `_` and `.`, never `.` or `..`.
pub fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn assets_round_trip_and_odd_ids_find_nothing() {
        let dir = std::env::temp_dir().join(format!("media-{}", crate::clock::unix_nanos()));
        let assets = Assets::new(Arc::new(LocalStore::new(&dir).expect("dir")));
        let a = assets
            .save(NewAsset {
                account_id: "acct".into(),
                kind: MediaKind::Audio,
                mime: "audio/wav".into(),
                bytes: b"RIFF....WAVE".to_vec(),
                width: None,
                height: None,
                duration_ms: Some(1500),
            })
            .await
            .expect("save");
        assert_eq!(assets.meta(&a.id).await.expect("meta"), Some(a.clone()));
        assert_eq!(
            assets.bytes(&a.id).await.expect("bytes").as_deref(),
            Some(&b"RIFF....WAVE"[..])
        );
        for odd in ["../x", "..", "a/b", "", "x y"] {
            assert_eq!(assets.meta(odd).await.expect("meta"), None, "{odd}");
        }
        let d = Dispatch {
            backend: "http://comfy".into(),
            backend_job: "p-1".into(),
            assets: None,
        };
        assets
            .record_dispatch("job 1/../x", &d)
            .await
            .expect("record");
        assert_eq!(assets.dispatch("job 1/../x").await.expect("get"), Some(d));
        std::fs::remove_dir_all(dir).ok();
    }
}
