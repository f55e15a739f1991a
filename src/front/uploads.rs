//! The media upload routes (contract §4): presigned upload URLs (`GET /v2/image/uploadUrl`,
//! `GET /v2/media/uploadUrl`: a POST of form fields then `file`; the legacy `/v1/…` forms: a
//! PUT), the uploads themselves when the front takes them (`POST /v2/uploads`, `PUT
//! /v1/uploads`), and the download URLs of uploaded slots. See [`crate::media::uploads`].

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::json;

use super::creative::{authenticated, success};
use super::runs::respond;
use super::FrontState;
use crate::api::error::ApiError;
use crate::media::data_uri::mime_of;
use crate::media::store::{Assets, NewAsset, PresignedUpload};
use crate::media::uploads::{fits, Family, Policy, PolicyError, Slot, MAX_BYTES, URL_SECS};

type Query = std::collections::HashMap<String, String>;

fn query(req: &HttpRequest) -> Result<Query, ApiError> {
    web::Query::<Query>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|_| ApiError::bad_body("The query string is malformed"))
}

/// The slot a query names, of the caller's account.
fn slot(family: Family, account: &str, q: &Query) -> Result<Slot, ApiError> {
    let sub = q.get("imageId").or_else(|| q.get("id")).map(String::as_str);
    Slot::new(
        family,
        account,
        q.get("jobId").map(String::as_str),
        q.get("type").map(String::as_str),
        sub,
    )
    .map_err(|(param, m)| ApiError::invalid(param, m))
}

/// The signed policy of an upload of `q`'s slot, and what the store needs to presign it.
async fn policy(
    req: &HttpRequest,
    state: &FrontState,
    family: Family,
) -> Result<(Policy, PresignedUpload), ApiError> {
    let key = authenticated(req, state).await?;
    let q = query(req)?;
    let slot = slot(family, &key.record.account_id, &q)?;
    let ct = slot
        .content_type(q.get("contentType").map(String::as_str))
        .map_err(|m| ApiError::invalid("contentType", m))?;
    let p = Policy {
        asset: slot.asset_id(),
        account: key.record.account_id.clone(),
        content_type: ct.clone(),
        max_bytes: MAX_BYTES,
        exp: crate::clock::unix_secs() as u64 + URL_SECS,
    };
    let upload = PresignedUpload {
        key: Assets::data_key(&p.asset),
        content_type: ct,
        max_bytes: MAX_BYTES,
        expires_secs: URL_SECS,
    };
    Ok((p, upload))
}

async fn post_url(req: HttpRequest, state: web::Data<FrontState>, family: Family) -> HttpResponse {
    respond(
        async {
            let (p, upload) = policy(&req, &state, family).await?;
            let store = state.services.media.assets.store();
            if let Some(presigned) = store.presigned_post(&upload) {
                let form = presigned.map_err(|e| ApiError::logged("presigning an upload", e))?;
                let fields: serde_json::Map<String, serde_json::Value> =
                    form.fields.into_iter().map(|(k, v)| (k, json!(v))).collect();
                return Ok(success(json!({"url": form.url, "fields": fields, "expiresIn": URL_SECS})));
            }
            let (encoded, sig) = p.seal(&state.services.media.signer);
            Ok(success(json!({
                "url": format!("{}/v2/uploads", super::chat::origin(&req)),
                "fields": {"key": p.asset, "Content-Type": p.content_type, "policy": encoded, "signature": sig},
                "expiresIn": URL_SECS,
            })))
        }
        .await,
    )
}

async fn put_url(req: HttpRequest, state: web::Data<FrontState>, family: Family) -> HttpResponse {
    respond(
        async {
            let (p, upload) = policy(&req, &state, family).await?;
            let store = state.services.media.assets.store();
            if let Some(presigned) = store.presigned_put(&upload) {
                let url = presigned.await.map_err(|e| ApiError::logged("presigning an upload", e))?;
                return Ok(success(json!({"uploadUrl": url, "contentType": p.content_type})));
            }
            let (encoded, sig) = p.seal(&state.services.media.signer);
            Ok(success(json!({
                "uploadUrl": format!("{}/v1/uploads?policy={encoded}&signature={sig}", super::chat::origin(&req)),
                "contentType": p.content_type,
            })))
        }
        .await,
    )
}

async fn download_url(
    req: HttpRequest,
    state: web::Data<FrontState>,
    family: Family,
) -> HttpResponse {
    respond(
        async {
            let key = authenticated(&req, &state).await?;
            let q = query(&req)?;
            let slot = slot(family, &key.record.account_id, &q)?;
            let id = slot.asset_id();
            let assets = &state.services.media.assets;
            let read = |e| ApiError::logged("reading media", e);
            if assets.meta(&id).await.map_err(read)?.is_none() {
                // Uploaded straight into the store: describe it now.
                let bytes = assets.bytes(&id).await.map_err(read)?.ok_or_else(|| {
                    ApiError::not_found(format!(
                        "Nothing is uploaded for {} `{}` of job `{}`",
                        family_name(family),
                        slot.slot_type,
                        slot.job_id
                    ))
                })?;
                let asset = new_asset(
                    &slot.account,
                    &bytes,
                    mime_of(&bytes).unwrap_or("application/octet-stream"),
                );
                let asset = crate::protocol::media::Asset {
                    id: id.clone(),
                    ..asset
                };
                assets
                    .describe(&asset)
                    .await
                    .map_err(|e| ApiError::logged("recording an upload", e))?;
            }
            let url = state.services.media.signer.url(
                &super::chat::origin(&req),
                &id,
                crate::clock::unix_secs() as u64,
            );
            Ok(success(json!({"downloadUrl": url})))
        }
        .await,
    )
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::Image => "image",
        Family::Media => "media",
    }
}

/// An asset of `bytes` (its size, and an image's dimensions).
fn new_asset(account: &str, bytes: &[u8], mime: &str) -> crate::protocol::media::Asset {
    let kind = crate::protocol::media::MediaKind::parse(mime.split('/').next().unwrap_or_default())
        .unwrap_or(crate::protocol::media::MediaKind::Image);
    let dims = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_dimensions().ok());
    crate::protocol::media::Asset {
        id: String::new(),
        account_id: account.to_string(),
        kind,
        mime: mime.to_string(),
        size_bytes: bytes.len() as u64,
        width: dims.map(|d| d.0),
        height: dims.map(|d| d.1),
        duration_ms: None,
    }
}

/// Opens a policy; a forged or expired one is a 403.
fn opened(
    state: &FrontState,
    encoded: Option<&str>,
    sig: Option<&str>,
) -> Result<Policy, ApiError> {
    let (Some(encoded), Some(sig)) = (encoded, sig) else {
        return Err(ApiError::forbidden(
            "The upload has no policy and signature; ask for an upload URL first",
        ));
    };
    Policy::open(
        &state.services.media.signer,
        encoded,
        sig,
        crate::clock::unix_secs() as u64,
    )
    .map_err(|e| match e {
        PolicyError::Forged => {
            ApiError::forbidden("The upload's signature does not match its policy")
        }
        PolicyError::Expired => {
            ApiError::forbidden("The upload URL has expired; ask for a new one")
        }
    })
}

/// Checks the bytes are what the policy allows and stores them as its asset.
async fn store(state: &FrontState, p: &Policy, bytes: Vec<u8>) -> Result<(), ApiError> {
    let found = mime_of(&bytes);
    if !found.is_some_and(|f| fits(&p.content_type, f)) {
        return Err(ApiError::unsupported_media(format!(
            "The file is not {} (it looks like {})",
            p.content_type,
            found.unwrap_or("nothing this server takes")
        )));
    }
    let a = new_asset(&p.account, &bytes, &p.content_type);
    let new = NewAsset {
        account_id: a.account_id,
        kind: a.kind,
        mime: a.mime,
        bytes,
        width: a.width,
        height: a.height,
        duration_ms: None,
    };
    state
        .services
        .media
        .assets
        .save_as(p.asset.clone(), new)
        .await
        .map_err(|e| ApiError::logged("storing an upload", e))?;
    Ok(())
}

/// The body as a stream another thread may poll (multer wants one; actix's payload lives on
/// its thread): a task here forwards it through a small channel, which keeps backpressure.
fn sendable(
    mut payload: web::Payload,
) -> impl futures_util::Stream<Item = Result<web::Bytes, std::io::Error>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<web::Bytes, std::io::Error>>(8);
    actix_web::rt::spawn(async move {
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| std::io::Error::other(e.to_string()));
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}

/// `POST /v2/uploads`: the form of a presigned POST (its fields, then `file`).
pub async fn post(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<FrontState>,
) -> HttpResponse {
    respond(
        async {
            let ct = req
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let boundary = multer::parse_boundary(ct)
                .map_err(|_| ApiError::bad_body("The upload must be multipart/form-data"))?;
            let limits = multer::Constraints::new().size_limit(
                multer::SizeLimit::new()
                    .per_field(MAX_BYTES)
                    .whole_stream(MAX_BYTES + (1 << 20)),
            );
            let stream = sendable(payload);
            let mut form = multer::Multipart::with_constraints(stream, boundary, limits);
            let mut fields = std::collections::HashMap::new();
            let too_large = || ApiError::too_large(MAX_BYTES as usize);
            let bad = |e: multer::Error| match e {
                multer::Error::FieldSizeExceeded { .. }
                | multer::Error::StreamSizeExceeded { .. } => too_large(),
                e => ApiError::bad_body(format!("The upload form is malformed: {e}")),
            };
            while let Some(mut field) = form.next_field().await.map_err(bad)? {
                let name = field.name().unwrap_or_default().to_string();
                if name != "file" {
                    fields.insert(name, field.text().await.map_err(bad)?);
                    continue;
                }
                let p = opened(
                    &state,
                    fields.get("policy").map(String::as_str),
                    fields.get("signature").map(String::as_str),
                )?;
                if fields.get("key") != Some(&p.asset)
                    || fields.get("Content-Type") != Some(&p.content_type)
                {
                    return Err(ApiError::forbidden(
                        "The form's key or Content-Type is not the one its policy allows",
                    ));
                }
                let mut bytes = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    if (bytes.len() + chunk.len()) as u64 > p.max_bytes {
                        return Err(too_large());
                    }
                    bytes.extend_from_slice(&chunk);
                }
                store(&state, &p, bytes).await?;
                return Ok(HttpResponse::NoContent().finish());
            }
            Err(ApiError::invalid(
                "file",
                "The form has no `file` (send the policy's fields, then `file`)",
            ))
        }
        .await,
    )
}

/// `PUT /v1/uploads?policy&signature`: the body is the file.
pub async fn put(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<FrontState>,
) -> HttpResponse {
    respond(
        async {
            let q = query(&req)?;
            let p = opened(
                &state,
                q.get("policy").map(String::as_str),
                q.get("signature").map(String::as_str),
            )?;
            let ct = req
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_ascii_lowercase);
            let ct = ct.map(|c| {
                if c == "image/jpg" {
                    "image/jpeg".to_string()
                } else {
                    c
                }
            });
            if ct.as_deref() != Some(p.content_type.as_str()) {
                return Err(ApiError::forbidden(format!(
                    "The upload's Content-Type must be {}, as its URL was made for",
                    p.content_type
                )));
            }
            let bytes = super::http::body_bytes(&req, payload, p.max_bytes as usize).await?;
            store(&state, &p, bytes.to_vec()).await?;
            Ok(success(json!({"uploaded": true})))
        }
        .await,
    )
}

pub async fn image_upload_url(req: HttpRequest, state: web::Data<FrontState>) -> HttpResponse {
    post_url(req, state, Family::Image).await
}

pub async fn media_upload_url(req: HttpRequest, state: web::Data<FrontState>) -> HttpResponse {
    post_url(req, state, Family::Media).await
}

pub async fn image_put_url(req: HttpRequest, state: web::Data<FrontState>) -> HttpResponse {
    put_url(req, state, Family::Image).await
}

pub async fn media_put_url(req: HttpRequest, state: web::Data<FrontState>) -> HttpResponse {
    put_url(req, state, Family::Media).await
}

pub async fn image_download_url(req: HttpRequest, state: web::Data<FrontState>) -> HttpResponse {
    download_url(req, state, Family::Image).await
}

pub async fn media_download_url(req: HttpRequest, state: web::Data<FrontState>) -> HttpResponse {
    download_url(req, state, Family::Media).await
}
