//! The HTTP edges every route shares: the error envelope as a response, the API key from
//! the headers, and request bodies read up to the configured limit.

use actix_web::http::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::Value;

use crate::api::error::ApiError;

/// The error as OpenAI sends it, with `Retry-After` where the error has one.
pub fn error_response(e: &ApiError) -> HttpResponse {
    count_error(e);
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = HttpResponse::build(status);
    if let Some(secs) = e.retry_after {
        r.insert_header((RETRY_AFTER, secs.to_string()));
    }
    r.json(e.envelope())
}

/// Counts an error sent to a client, by type and status.
pub fn count_error(e: &ApiError) {
    crate::telemetry::metrics::front()
        .request_errors
        .with_label_values(&[e.kind, &e.status.to_string()])
        .inc();
}

/// The key of `Authorization: Bearer KEY`, or of `api-key: KEY` (what Sogni's SDKs send).
pub fn api_key(req: &HttpRequest) -> Result<String, ApiError> {
    let text = |v: &HeaderValue| v.to_str().map(str::trim).map(str::to_string).ok();
    if let Some(v) = req.headers().get(AUTHORIZATION).and_then(text) {
        return match v.split_once(' ') {
            Some((scheme, key))
                if scheme.eq_ignore_ascii_case("bearer") && !key.trim().is_empty() =>
            {
                Ok(key.trim().to_string())
            }
            _ => Err(ApiError::unauthorized(
                "The Authorization header must be `Bearer YOUR_API_KEY`",
            )),
        };
    }
    match req.headers().get("api-key").and_then(text) {
        Some(k) if !k.is_empty() => Ok(k),
        _ => Err(ApiError::unauthorized(
            "You didn't provide an API key. Send it as `Authorization: Bearer YOUR_API_KEY` (or an `api-key` header)",
        )),
    }
}

/// The body as one JSON value; larger than `limit` bytes is 413 before or while reading.
pub async fn json_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Value, ApiError> {
    parse_json(&body_bytes(req, payload, limit).await?)
}

/// The longest a request body may pause: a client that declares more than it sends (or
/// trickles it) gets a 408 instead of holding the connection.
const BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// The body's bytes; larger than `limit` bytes is 413 before or while reading, a pause of
/// [`BODY_IDLE`] is 408.
pub async fn body_bytes(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    let mut body = web::BytesMut::new();
    loop {
        let chunk = match tokio::time::timeout(BODY_IDLE, payload.next()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(_) => return Err(ApiError::body_timeout(BODY_IDLE.as_secs())),
        };
        let chunk = chunk
            .map_err(|e| ApiError::bad_body(format!("could not read the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A body as one JSON value.
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_body(
            "The request body is empty; send a JSON object",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_body(format!("The request body is not valid JSON: {e}")))
}
