//! An `image_url` content part: inline `data:` URIs of PNG, JPEG or WebP only (the server
//! fetches nothing), at most [`MAX_IMAGE_BYTES`] each, checked to decode before anything
//! is held or placed. Each refusal is a 400 naming the field.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Map, Value};

use super::chat_request::{ImagePart, MAX_IMAGE_BYTES};
use super::error::ApiError;
use crate::engine::vision::preprocess::Rgb;

/// Reads the part at `p` (its `type` is `image_url`).
pub fn parse(p: &str, obj: &Map<String, Value>) -> Result<ImagePart, ApiError> {
    let field = format!("{p}.image_url");
    let url_field = format!("{field}.url");
    let url = match obj.get("image_url") {
        Some(Value::Object(o)) => {
            if let Some(d) = o.get("detail") {
                if !matches!(d.as_str(), Some("auto" | "low" | "high")) {
                    return Err(ApiError::invalid(
                        format!("{field}.detail"),
                        format!("`{field}.detail` must be `auto`, `low` or `high`"),
                    ));
                }
            }
            o.get("url").and_then(Value::as_str)
        }
        Some(Value::String(s)) => Some(s.as_str()),
        _ => None,
    }
    .ok_or_else(|| ApiError::invalid(&url_field, format!("`{url_field}` must be a string")))?;
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Err(ApiError::invalid(
            &url_field,
            format!("`{url_field}`: remote image URLs are not fetched; send the image inline as a `data:image/png;base64,...` URI"),
        ));
    }
    let Some((header, payload)) = url.strip_prefix("data:").and_then(|r| r.split_once(',')) else {
        return Err(ApiError::invalid(
            &url_field,
            format!("`{url_field}` must be a `data:image/<format>;base64,...` URI"),
        ));
    };
    let Some(mime) = header.strip_suffix(";base64") else {
        return Err(ApiError::invalid(
            &url_field,
            format!("`{url_field}` must be base64 encoded (`data:image/<format>;base64,...`)"),
        ));
    };
    let format = mime
        .strip_prefix("image/")
        .unwrap_or(mime)
        .to_ascii_lowercase();
    if !matches!(format.as_str(), "png" | "jpeg" | "jpg" | "webp") {
        return Err(ApiError::invalid(
            &url_field,
            format!(
                "`{url_field}`: image format `{format}` is not supported (send PNG, JPEG or WebP)"
            ),
        ));
    }
    if payload.len() / 4 * 3 > MAX_IMAGE_BYTES + 3 {
        return Err(too_big(&url_field, payload.len() / 4 * 3));
    }
    let data = base64::engine::general_purpose::STANDARD
        .decode(payload.trim_end())
        .map_err(|e| {
            ApiError::invalid(
                &url_field,
                format!("`{url_field}` is not valid base64: {e}"),
            )
        })?;
    if data.len() > MAX_IMAGE_BYTES {
        return Err(too_big(&url_field, data.len()));
    }
    let img = Rgb::decode(&data)
        .map_err(|e| ApiError::invalid(&url_field, format!("`{url_field}`: {e}")))?;
    Ok(ImagePart {
        data: Arc::new(data),
        width: img.width,
        height: img.height,
    })
}

fn too_big(field: &str, bytes: usize) -> ApiError {
    ApiError::invalid(
        field,
        format!("`{field}`: the image is {bytes} bytes; the limit is {MAX_IMAGE_BYTES} (10 MB)"),
    )
}
