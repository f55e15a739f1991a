//! Inline media: `data:` URIs in tool arguments and `media_references`. The server never
//! fetches a remote URL a client or a model names; media comes inline, and is checked
//! before anything is stored or billed: a type we take, a size within the limit, and bytes
//! that are what they claim (images decode; audio and video start with their container's
//! magic bytes).

use base64::Engine;

use crate::protocol::media::MediaKind;

/// The most bytes one inline item may decode to.
pub const MAX_MEDIA_BYTES: usize = 10 << 20;

/// An inline item, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineMedia {
    pub kind: MediaKind,
    pub mime: String,
    pub bytes: Vec<u8>,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MediaInputError {
    #[error("remote URLs are not fetched; send the media inline as a base64 data: URI")]
    Remote,
    #[error("not a base64 data: URI")]
    NotDataUri,
    #[error("the media type `{0}` is not accepted (images: PNG, JPEG, WebP; audio: WAV, MP3, FLAC, OGG, M4A; video: MP4, MOV, WebM)")]
    Type(String),
    #[error("the data is larger than {} MB", MAX_MEDIA_BYTES >> 20)]
    TooLarge,
    #[error("the data is not valid base64")]
    Base64,
    #[error("the bytes are not a valid {0}")]
    Corrupt(String),
    #[error("expected {expected} media, got {got}")]
    WrongKind { expected: String, got: String },
}

/// The kind of each accepted type.
fn kind_of(mime: &str) -> Option<MediaKind> {
    Some(match mime {
        "image/png" | "image/jpeg" | "image/jpg" | "image/webp" => MediaKind::Image,
        "audio/wav" | "audio/x-wav" | "audio/wave" | "audio/mpeg" | "audio/mp3" | "audio/flac"
        | "audio/ogg" | "audio/mp4" | "audio/x-m4a" | "audio/aac" => MediaKind::Audio,
        "video/mp4" | "video/quicktime" | "video/webm" => MediaKind::Video,
        _ => return None,
    })
}

/// Parses and checks `uri`, which must hold media of `expected` kind (any kind when
/// `None`).
pub fn parse(uri: &str, expected: Option<MediaKind>) -> Result<InlineMedia, MediaInputError> {
    let lower = uri.get(..8).unwrap_or(uri).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Err(MediaInputError::Remote);
    }
    let rest = uri
        .strip_prefix("data:")
        .ok_or(MediaInputError::NotDataUri)?;
    let (header, data) = rest.split_once(',').ok_or(MediaInputError::NotDataUri)?;
    let mime = header
        .strip_suffix(";base64")
        .ok_or(MediaInputError::NotDataUri)?
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let kind = kind_of(&mime).ok_or_else(|| MediaInputError::Type(mime.clone()))?;
    if let Some(e) = expected.filter(|e| *e != kind) {
        return Err(MediaInputError::WrongKind {
            expected: e.as_str().into(),
            got: kind.as_str().into(),
        });
    }
    // Base64 is 4 characters per 3 bytes: refuse what cannot fit before decoding it.
    if data.len() / 4 * 3 > MAX_MEDIA_BYTES + 3 {
        return Err(MediaInputError::TooLarge);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|_| MediaInputError::Base64)?;
    if bytes.len() > MAX_MEDIA_BYTES {
        return Err(MediaInputError::TooLarge);
    }
    let (width, height) = check_bytes(kind, &mime, &bytes)?;
    Ok(InlineMedia {
        kind,
        mime: if mime == "image/jpg" {
            "image/jpeg".into()
        } else {
            mime
        },
        bytes,
        width,
        height,
    })
}

/// The image's size, once it decodes; audio and video by their container's magic bytes.
fn check_bytes(
    kind: MediaKind,
    mime: &str,
    b: &[u8],
) -> Result<(Option<u32>, Option<u32>), MediaInputError> {
    let corrupt = || MediaInputError::Corrupt(mime.to_string());
    match kind {
        MediaKind::Image => {
            let img = image::load_from_memory(b).map_err(|_| corrupt())?;
            Ok((Some(img.width()), Some(img.height())))
        }
        MediaKind::Audio | MediaKind::Video => {
            if sniff(b) == Some(kind) {
                Ok((None, None))
            } else {
                Err(corrupt())
            }
        }
    }
}

/// The kind a container's first bytes say it is.
pub fn sniff(b: &[u8]) -> Option<MediaKind> {
    mime_of(b).and_then(|m| MediaKind::parse(m.split('/').next().unwrap_or_default()))
}

/// The content type the bytes are, by their first bytes (`None`: none this server takes).
pub fn mime_of(bytes: &[u8]) -> Option<&'static str> {
    let at = |i: usize, s: &[u8]| bytes.get(i..i + s.len()) == Some(s);
    Some(if at(0, b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if at(0, b"\xff\xd8\xff") {
        "image/jpeg"
    } else if at(0, b"RIFF") && at(8, b"WEBP") {
        "image/webp"
    } else if at(0, b"GIF87a") || at(0, b"GIF89a") {
        "image/gif"
    } else if at(0, b"RIFF") && at(8, b"WAVE") {
        "audio/wav"
    } else if at(0, b"ID3") || at(0, b"\xff\xfb") || at(0, b"\xff\xf3") || at(0, b"\xff\xf2") {
        "audio/mpeg"
    } else if at(0, b"OggS") {
        "audio/ogg"
    } else if at(0, b"fLaC") {
        "audio/flac"
    } else if at(0, b"\x1a\x45\xdf\xa3") {
        "video/webm"
    } else if at(4, b"ftyp") {
        if at(8, b"qt  ") {
            "video/quicktime"
        } else if at(8, b"M4A ") || at(8, b"M4B ") {
            "audio/mp4"
        } else {
            "video/mp4"
        }
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png() -> String {
        let mut out = Vec::new();
        image::DynamicImage::new_rgb8(3, 2)
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .expect("png");
        format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        )
    }

    #[test]
    fn a_png_is_taken_with_its_size() {
        let m = parse(&png(), Some(MediaKind::Image)).expect("png");
        assert_eq!((m.width, m.height), (Some(3), Some(2)));
    }

    #[test]
    fn bad_media_is_refused_with_its_reason() {
        assert_eq!(
            parse("https://example.com/a.png", None).err(),
            Some(MediaInputError::Remote)
        );
        assert_eq!(
            parse("data:image/gif;base64,R0lG", None).err(),
            Some(MediaInputError::Type("image/gif".into()))
        );
        assert_eq!(
            parse("data:image/png;base64,AAAA", None).err(),
            Some(MediaInputError::Corrupt("image/png".into()))
        );
        assert_eq!(
            parse("data:image/png;base64,@@@", None).err(),
            Some(MediaInputError::Base64)
        );
        assert!(matches!(
            parse(&png(), Some(MediaKind::Audio)),
            Err(MediaInputError::WrongKind { .. })
        ));
        let big = format!("data:audio/wav;base64,{}", "A".repeat(15 << 20));
        assert_eq!(parse(&big, None).err(), Some(MediaInputError::TooLarge));
        let wav = base64::engine::general_purpose::STANDARD.encode(b"RIFF\0\0\0\0WAVEfmt ");
        assert!(parse(&format!("data:audio/wav;base64,{wav}"), None).is_ok());
    }
}
