//! Media: what hosted creative tools make and read. [`store`] keeps assets (local files or
//! S3-compatible storage) and the records that make media jobs idempotent; [`signing`]
//! makes the signed, expiring URLs the front serves them under; [`data_uri`] checks inline
//! media from clients and models. A media worker ([`worker`]) runs jobs on a backend
//! ([`backend`]: [`comfyui`], [`openai_images`]), filling the pipeline's workflow graph
//! ([`graphs`]).

pub mod backend;
pub mod comfyui;
pub mod data_uri;
pub mod graphs;
pub mod openai_images;
pub mod signing;
pub mod store;
pub mod worker;

/// What a front needs of media: the assets and the signer of their URLs.
pub struct MediaServices {
    pub assets: store::Assets,
    pub signer: signing::UrlSigner,
}

impl MediaServices {
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
