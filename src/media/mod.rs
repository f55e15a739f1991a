//! Media: what hosted creative tools make and read. [`store`] keeps assets (local files, or
//! S3-compatible storage through [`s3`]) and the records that make media jobs idempotent; [`signing`]
//! makes the signed, expiring URLs the front serves them under; [`data_uri`] checks inline
//! media from clients and models. A media worker ([`worker`]) runs jobs on a backend
//! ([`backend`]: [`comfyui`], [`openai_images`]), filling the pipeline's workflow graph
//! ([`graphs`]). [`uploads`] lets clients put their own media in, through presigned URLs.

pub mod backend;
pub mod comfyui;
pub mod data_uri;
pub mod graphs;
pub mod openai_images;
pub mod s3;
pub mod s3_post;
pub mod signing;
pub mod store;
pub mod uploads;
pub mod worker;

/// What a front needs of media: the assets and the signer of their URLs.
pub struct MediaServices {
    pub assets: store::Assets,
    pub signer: signing::UrlSigner,
}

impl MediaServices {
    /// The store `spec` names: `s3://BUCKET[/PREFIX]` (the signing key is the bucket's
    /// `url.key`, made by the first node that finds none), or a folder.
    pub async fn open(spec: &str) -> anyhow::Result<Self> {
        if !spec.starts_with("s3://") {
            return Self::local(std::path::Path::new(spec));
        }
        let s3 = s3::S3Store::open(spec)?;
        let fresh = crate::ids::random_hex(32)?.into_bytes();
        s3.put_if_absent("url.key", fresh).await?;
        let secret = store::MediaStore::get(&s3, "url.key")
            .await?
            .ok_or_else(|| anyhow::anyhow!("{spec}: the signing key vanished"))?;
        Ok(Self {
            assets: store::Assets::new(std::sync::Arc::new(s3)),
            signer: signing::UrlSigner::new(&secret),
        })
    }

    /// Local files under `dir`, and the secret in `dir/url.key` (made on first use, so
    /// URLs stay good across restarts).
    pub fn local(dir: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let store = store::LocalStore::new(dir)
            .with_context(|| format!("opening the media store in {}", dir.display()))?;
        let key_path = dir.join("url.key");
        let secret = match std::fs::read(&key_path) {
            Ok(k) if k.len() >= 32 => k,
            _ => {
                let k = crate::ids::random_hex(32)?.into_bytes();
                std::fs::write(&key_path, &k)
                    .with_context(|| format!("writing {}", key_path.display()))?;
                k
            }
        };
        Ok(Self {
            assets: store::Assets::new(std::sync::Arc::new(store)),
            signer: signing::UrlSigner::new(&secret),
        })
    }
}
