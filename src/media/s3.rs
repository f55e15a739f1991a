//! The media store on S3-compatible storage (AWS S3, MinIO), through the `object_store`
//! crate, for a cluster: fronts and media workers on any machine share one bucket.
//! `s3://BUCKET[/PREFIX]`; credentials, region and endpoint come from the usual `AWS_*`
//! environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`,
//! `AWS_ENDPOINT` for MinIO or another S3, `AWS_ALLOW_HTTP=true` for a plain-HTTP one).

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

use super::s3_post::{self, Credentials};
use super::store::{MediaStore, MediaStoreError, PostForm, PresignedUpload, StoreFuture};

pub struct S3Store {
    bucket: AmazonS3,
    prefix: String,
    /// Static credentials, for presigned POST forms (none: the front takes uploads).
    credentials: Option<Credentials>,
}

impl S3Store {
    /// The store at `url` (`s3://bucket/prefix`).
    pub fn open(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            anyhow::anyhow!("an S3 media store is s3://BUCKET[/PREFIX], not `{url}`")
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        anyhow::ensure!(
            !bucket.is_empty(),
            "the media store URL `{url}` names no bucket"
        );
        let builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        let value = |k| builder.get_config_value(&k);
        let credentials = match (
            value(AmazonS3ConfigKey::AccessKeyId),
            value(AmazonS3ConfigKey::SecretAccessKey),
        ) {
            (Some(access_key), Some(secret_key)) => Some(Credentials {
                access_key,
                secret_key,
                token: value(AmazonS3ConfigKey::Token),
                region: value(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into()),
                endpoint: value(AmazonS3ConfigKey::Endpoint),
                bucket: bucket.to_string(),
            }),
            _ => None,
        };
        let bucket = builder
            .build()
            .map_err(|e| anyhow::anyhow!("the S3 media store {url}: {e}"))?;
        Ok(Self {
            bucket,
            prefix: prefix.trim_matches('/').to_string(),
            credentials,
        })
    }

    fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    /// Writes `bytes` under `key` unless something is there already (the first writer
    /// wins, as two fronts starting together must agree on one signing key).
    pub async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<(), MediaStoreError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .bucket
            .put_opts(&self.path(key), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(MediaStoreError::Backend(e.to_string())),
        }
    }
}

impl MediaStore for S3Store {
    fn put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.bucket
                .put(&self.path(key), PutPayload::from(bytes))
                .await
                .map(|_| ())
                .map_err(|e| MediaStoreError::Backend(e.to_string()))
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let backend = |e: object_store::Error| MediaStoreError::Backend(e.to_string());
            match self.bucket.get(&self.path(key)).await {
                Ok(r) => Ok(Some(r.bytes().await.map_err(backend)?.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(backend(e)),
            }
        })
    }

    fn presigned_post(&self, u: &PresignedUpload) -> Option<Result<PostForm, MediaStoreError>> {
        let c = self.credentials.as_ref()?;
        let key = self.path(&u.key).to_string();
        let (url, fields) = s3_post::form(
            c,
            &key,
            &u.content_type,
            u.max_bytes,
            u.expires_secs,
            chrono::Utc::now(),
        );
        Some(Ok(PostForm { url, fields }))
    }

    fn presigned_put<'a>(&'a self, u: &'a PresignedUpload) -> Option<StoreFuture<'a, String>> {
        Some(Box::pin(async move {
            self.bucket
                .signed_url(
                    reqwest::Method::PUT,
                    &self.path(&u.key),
                    std::time::Duration::from_secs(u.expires_secs),
                )
                .await
                .map(|u| u.to_string())
                .map_err(|e| MediaStoreError::Backend(e.to_string()))
        }))
    }
}
