//! The body of `POST /v1/chat/runs`, read in either case (snake_case as the SDKs send it,
//! camelCase as the snapshot shows it): the run's `request` as the snapshot keeps it, the
//! chat request each LLM round is made from, and the run's media, which must be http(s)
//! URLs this server signed (durable runs refuse inline `data:` media anywhere; contract §3).

use serde_json::{json, Map, Value};

use crate::api::error::ApiError;
use crate::media::signing::{query_signature, SignatureError};
use crate::media::MediaServices;
use crate::protocol::media::Asset;

/// The fields of the create body, by snapshot name and wire name.
const FIELDS: [(&str, &str); 15] = [
    ("messages", "messages"),
    ("tools", "tools"),
    ("toolChoice", "tool_choice"),
    ("model", "model"),
    ("sampling", "sampling"),
    ("mediaReferences", "media_references"),
    ("mediaContext", "media_context"),
    ("maxEstimatedCapacityUnits", "max_estimated_capacity_units"),
    ("confirmCost", "confirm_cost"),
    ("sessionId", "session_id"),
    ("clientMessageId", "client_message_id"),
    ("tokenType", "token_type"),
    ("billingMode", "billing_mode"),
    ("appSource", "app_source"),
    ("runtimeConfig", "runtime_config"),
];

/// Sampling keys a round takes, camelCase accepted.
const SAMPLING: [(&str, &str); 9] = [
    ("temperature", "temperature"),
    ("top_p", "topP"),
    ("top_k", "topK"),
    ("min_p", "minP"),
    ("max_tokens", "maxTokens"),
    ("repetition_penalty", "repetitionPenalty"),
    ("frequency_penalty", "frequencyPenalty"),
    ("presence_penalty", "presencePenalty"),
    ("seed", "seed"),
];

/// A create body, read.
pub struct RunRequest {
    /// The snapshot's `request` (camelCase; absent fields omitted).
    pub snapshot: Value,
    /// The media URLs to resolve: uploads (`media_references`, `mediaContext.uploaded*`)
    /// and earlier outputs (`mediaContext.images|videos|audio`).
    pub upload_urls: Vec<String>,
    pub seed_urls: Vec<String>,
}

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(param, message)
}

/// Reads a create body (a JSON object).
pub fn parse(body: &Value, idempotency_key: Option<&str>) -> Result<RunRequest, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| invalid("body", "The body must be a JSON object"))?;
    let mut snapshot = Map::new();
    for (camel, snake) in FIELDS {
        if let Some(v) = obj.get(snake).or_else(|| obj.get(camel)) {
            if !v.is_null() {
                snapshot.insert(camel.into(), v.clone());
            }
        }
    }
    match snapshot.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => {}
        _ => return Err(invalid("messages", "`messages` must be a non-empty array")),
    }
    if let Some(k) = idempotency_key {
        snapshot.insert("idempotencyKey".into(), k.into());
    }
    refuse_inline_media(&snapshot)?;
    let mut upload_urls = Vec::new();
    let mut seed_urls = Vec::new();
    for (i, r) in array(&snapshot, "mediaReferences").iter().enumerate() {
        let url = r.get("url").and_then(Value::as_str).ok_or_else(|| {
            invalid(
                &format!("media_references[{i}].url"),
                "Each media reference needs a `url`",
            )
        })?;
        upload_urls.push(url.to_string());
    }
    if let Some(ctx) = snapshot.get("mediaContext") {
        for (field, to) in [
            ("uploadedImages", 0),
            ("uploadedVideos", 0),
            ("uploadedAudio", 0),
            ("images", 1),
            ("videos", 1),
            ("audio", 1),
        ] {
            for (i, v) in ctx
                .get(field)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let url = v.as_str().ok_or_else(|| {
                    invalid(
                        &format!("media_context.{field}[{i}]"),
                        "Media context entries are URLs",
                    )
                })?;
                [&mut upload_urls, &mut seed_urls][to].push(url.to_string());
            }
        }
    }
    Ok(RunRequest {
        snapshot: Value::Object(snapshot),
        upload_urls,
        seed_urls,
    })
}

fn array<'a>(o: &'a Map<String, Value>, k: &str) -> &'a [Value] {
    o.get(k)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A 400 for the first inline `data:` media of the request.
fn refuse_inline_media(snapshot: &Map<String, Value>) -> Result<(), ApiError> {
    let data = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .is_some_and(|s| s.trim_start().starts_with("data:"))
    };
    let refuse = |path: String| {
        Err(invalid(
            &path,
            format!("Durable runs take media by http(s) URL, not inline `data:` ({path}); upload it first"),
        ))
    };
    for (m, msg) in array(snapshot, "messages").iter().enumerate() {
        for (p, part) in msg
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            for field in ["image_url", "video_url", "audio_url", "input_audio", "file"] {
                let v = part.get(field);
                if data(v)
                    || data(v.and_then(|v| v.get("url")))
                    || data(v.and_then(|v| v.get("data")))
                {
                    return refuse(format!("messages[{m}].content[{p}].{field}"));
                }
            }
        }
    }
    for (i, r) in array(snapshot, "mediaReferences").iter().enumerate() {
        // `url` and `value` must not be data URIs; the inline fields must not be there.
        let inline = ["dataUri", "data_uri", "data"]
            .into_iter()
            .find(|f| r.get(*f).is_some_and(|v| !v.is_null()));
        let data_url = ["url", "value"].into_iter().find(|f| data(r.get(*f)));
        if let Some(field) = inline.or(data_url) {
            return refuse(format!("media_references[{i}].{field}"));
        }
    }
    if let Some(ctx) = snapshot.get("mediaContext").and_then(Value::as_object) {
        for (field, list) in ctx {
            for (i, v) in list.as_array().into_iter().flatten().enumerate() {
                if data(Some(v)) {
                    return refuse(format!("media_context.{field}[{i}]"));
                }
            }
        }
    }
    Ok(())
}

/// The asset a media URL of this server names, if the URL is one this server signed, still
/// valid, for media of `account_id`; a 400 naming `param` otherwise.
pub async fn resolve(
    media: &MediaServices,
    url: &str,
    account_id: &str,
    param: &str,
) -> Result<Asset, ApiError> {
    let refuse = |why: &str| {
        invalid(
            param,
            format!("{param}: `{url}` {why}; durable runs take media by the signed URLs this server gives (a hosted tool's output)"),
        )
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(refuse("is not an http(s) URL"));
    }
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let id = path
        .rsplit_once("/v1/media/")
        .map(|(_, id)| id)
        .filter(|id| crate::media::store::valid_id(id))
        .ok_or_else(|| refuse("is not a media URL of this server"))?;
    let (exp, sig) = query_signature(query).ok_or_else(|| refuse("is not signed"))?;
    match media
        .signer
        .verify(id, exp, &sig, crate::clock::unix_secs() as u64)
    {
        Ok(()) => {}
        Err(SignatureError::Expired) => return Err(refuse("has expired")),
        Err(SignatureError::Bad) => return Err(refuse("has a signature that is not valid")),
    }
    let asset = media
        .assets
        .meta(id)
        .await
        .map_err(|e| ApiError::logged("reading media", e))?
        .filter(|a| a.account_id == account_id)
        .ok_or_else(|| refuse("names no media of this account"))?;
    Ok(asset)
}

/// The chat request body of a round of the run whose snapshot `request` is `r`.
pub fn chat_body(r: &Value) -> Value {
    let mut body = json!({
        "messages": r["messages"],
        "stream": false,
    });
    for (from, to) in [
        ("model", "model"),
        ("tools", "tools"),
        ("toolChoice", "tool_choice"),
        ("tokenType", "token_type"),
    ] {
        if let Some(v) = r.get(from).filter(|v| !v.is_null()) {
            body[to] = v.clone();
        }
    }
    if let Some(s) = r.get("sampling").and_then(Value::as_object) {
        for (snake, camel) in SAMPLING {
            if let Some(v) = s.get(snake).or_else(|| s.get(camel)) {
                body[snake] = v.clone();
            }
        }
    }
    body
}
