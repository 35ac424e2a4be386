//! Images a message carries.
//!
//! A message may carry images as bytes (PNG, JPEG, GIF or WebP: the formats
//! every supported provider reads) or as a URL the provider fetches. Each
//! is checked once, when the message arrives ([`check`]): its format is read
//! from its bytes (a declared media type that disagrees is refused), its
//! size is bounded, its dimensions are read for the token estimate. It is
//! then stored once, per user and content ([`NewImage`], kept by
//! [`ImageStore`](crate::store::ImageStore)): the interaction refers to it
//! by [`ImageId`], and the steps that show it to the
//! model read it back, so a resumed run sends the same image and no step
//! payload holds a copy.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ErrorCode;
use crate::ids::ImageId;
use crate::principal::Principal;
use crate::time::Timestamp;

/// The most bytes an image may have unless the runtime's configuration
/// says otherwise: 5 MiB, the most Anthropic's API accepts per image
/// (OpenAI's accepts more), so that an image any agent accepts reaches any
/// provider.
pub const DEFAULT_MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;

/// The most images one message may carry unless configured otherwise.
pub const DEFAULT_MAX_IMAGES: usize = 8;

/// The longest URL accepted for an image.
pub const MAX_URL_BYTES: usize = 2048;

/// The tokens an image is counted as when its size is not known (a URL):
/// about what the providers charge for the largest image they take without
/// scaling it down.
pub const UNKNOWN_IMAGE_TOKENS: usize = 1_600;

/// An image format every supported provider reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ImageFormat {
    /// PNG.
    Png,
    /// JPEG.
    Jpeg,
    /// GIF (its first frame).
    Gif,
    /// WebP.
    Webp,
}

crate::step::str_enum!(ImageFormat, "image format",
    ImageFormat::Png => "png",
    ImageFormat::Jpeg => "jpeg",
    ImageFormat::Gif => "gif",
    ImageFormat::Webp => "webp",
);

impl ImageFormat {
    /// Its media type (`image/png`).
    pub fn media_type(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Gif => "image/gif",
            ImageFormat::Webp => "image/webp",
        }
    }

    /// The format of a media type (`image/jpg` is read as JPEG, as browsers
    /// send it); `None` for any other.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        let essence = media_type.split(';').next().unwrap_or("").trim();
        match essence.to_ascii_lowercase().as_str() {
            "image/png" => Some(ImageFormat::Png),
            "image/jpeg" | "image/jpg" => Some(ImageFormat::Jpeg),
            "image/gif" => Some(ImageFormat::Gif),
            "image/webp" => Some(ImageFormat::Webp),
            _ => None,
        }
    }

    /// The format the bytes are in, read from their first bytes.
    pub fn sniff(data: &[u8]) -> Option<Self> {
        match imagesize::image_type(data).ok()? {
            imagesize::ImageType::Png => Some(ImageFormat::Png),
            imagesize::ImageType::Jpeg => Some(ImageFormat::Jpeg),
            imagesize::ImageType::Gif => Some(ImageFormat::Gif),
            imagesize::ImageType::Webp => Some(ImageFormat::Webp),
            _ => None,
        }
    }
}

/// An image as a host hands it over with a message. In JSON:
/// `{"type": "bytes", "data": "<base64>", "media_type": "image/png"}` or
/// `{"type": "url", "url": "https://…"}`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ImageInput {
    /// The image's bytes.
    Bytes {
        /// The bytes (base64 in JSON).
        #[serde(with = "base64_vec")]
        data: Vec<u8>,
        /// The media type the sender declared, if any: checked against
        /// the bytes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_type: Option<String>,
    },
    /// A URL the provider fetches the image from (`https` or `http`).
    Url {
        /// The URL.
        url: String,
    },
}

impl ImageInput {
    /// An image given as bytes; its format is read from them.
    pub fn bytes(data: impl Into<Vec<u8>>) -> Self {
        ImageInput::Bytes {
            data: data.into(),
            media_type: None,
        }
    }

    /// An image given as bytes with the media type its sender declared
    /// (refused if the bytes are in another format).
    pub fn bytes_of_type(data: impl Into<Vec<u8>>, media_type: impl Into<String>) -> Self {
        ImageInput::Bytes {
            data: data.into(),
            media_type: Some(media_type.into()),
        }
    }

    /// An image the provider fetches from `url`.
    pub fn url(url: impl Into<String>) -> Self {
        ImageInput::Url { url: url.into() }
    }
}

impl fmt::Debug for ImageInput {
    // Bytes print as their length: an image in a log line is noise at best.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageInput::Bytes { data, media_type } => f
                .debug_struct("Bytes")
                .field("len", &data.len())
                .field("media_type", media_type)
                .finish(),
            ImageInput::Url { url } => f.debug_struct("Url").field("url", url).finish(),
        }
    }
}

/// Why an image was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The bytes are empty.
    #[error("the image is empty")]
    Empty,
    /// The bytes are not an image of a format the providers read.
    #[error("the image is not a PNG, JPEG, GIF or WebP file")]
    NotAnImage,
    /// The declared media type is not one the providers read.
    #[error("images of type `{0}` are not accepted (PNG, JPEG, GIF and WebP are)")]
    UnsupportedType(String),
    /// The declared media type disagrees with the bytes.
    #[error("the image was declared as {declared} but is {found}")]
    TypeMismatch {
        /// The media type declared.
        declared: String,
        /// The media type of the bytes.
        found: &'static str,
    },
    /// The image is larger than accepted.
    #[error("the image has {size} bytes; at most {limit} are accepted")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The URL is not one a provider can fetch.
    #[error("the image URL is not accepted: {0}")]
    BadUrl(&'static str),
    /// The message carries more images than accepted.
    #[error("the message carries {count} images; at most {limit} are accepted")]
    TooMany {
        /// How many it carries.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

impl ImageError {
    /// A stable code for hosts.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::RuntimeImageInvalid
    }
}

/// What [`check`] read of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImageFacts {
    /// Its format; `None` for a URL whose media type is not known.
    pub format: Option<ImageFormat>,
    /// Its width and height in pixels, when read from its bytes.
    pub size: Option<(u32, u32)>,
    /// Its size in bytes (0 for a URL).
    pub bytes: usize,
}

/// Checks one image: bytes in a format the providers read, no larger
/// than `max_bytes`, agreeing with their declared media type; or a URL
/// with an `https`/`http` scheme, no longer than [`MAX_URL_BYTES`], without
/// spaces or credentials.
pub fn check(input: &ImageInput, max_bytes: usize) -> Result<ImageFacts, ImageError> {
    match input {
        ImageInput::Bytes { data, media_type } => {
            if data.is_empty() {
                return Err(ImageError::Empty);
            }
            if data.len() > max_bytes {
                return Err(ImageError::TooLarge {
                    size: data.len(),
                    limit: max_bytes,
                });
            }
            let format = ImageFormat::sniff(data).ok_or(ImageError::NotAnImage)?;
            if let Some(declared) = media_type {
                let named = ImageFormat::from_media_type(declared)
                    .ok_or_else(|| ImageError::UnsupportedType(clip(declared)))?;
                if named != format {
                    return Err(ImageError::TypeMismatch {
                        declared: clip(declared),
                        found: format.media_type(),
                    });
                }
            }
            // The header must give its dimensions: bytes that only start
            // like an image (a truncated upload) are refused here rather
            // than by the provider, mid-interaction.
            let size = dimensions(data).ok_or(ImageError::NotAnImage)?;
            Ok(ImageFacts {
                format: Some(format),
                size: Some(size),
                bytes: data.len(),
            })
        }
        ImageInput::Url { url } => {
            check_url(url)?;
            Ok(ImageFacts {
                format: url_format(url),
                size: None,
                bytes: 0,
            })
        }
    }
}

/// Width and height read from an image's header; `None` when it does not
/// read or says 0.
fn dimensions(data: &[u8]) -> Option<(u32, u32)> {
    let s = imagesize::blob_size(data).ok()?;
    let (w, h) = (u32::try_from(s.width).ok()?, u32::try_from(s.height).ok()?);
    (w > 0 && h > 0).then_some((w, h))
}

/// A declared media type as an error repeats it: at most 100 bytes.
fn clip(s: &str) -> String {
    s.chars().take(100).collect()
}

fn check_url(url: &str) -> Result<(), ImageError> {
    if url.len() > MAX_URL_BYTES {
        return Err(ImageError::BadUrl("longer than 2048 bytes"));
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or(ImageError::BadUrl("only https and http URLs are fetched"))?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ImageError::BadUrl(
            "it contains spaces or control characters",
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Err(ImageError::BadUrl("it names no host"));
    }
    if authority.contains('@') {
        // Credentials in a URL would be sent to the provider and stored.
        return Err(ImageError::BadUrl("it carries credentials"));
    }
    Ok(())
}

/// The format a URL's path names by its extension, if any.
fn url_format(url: &str) -> Option<ImageFormat> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    match ext.as_str() {
        "png" => Some(ImageFormat::Png),
        "jpg" | "jpeg" => Some(ImageFormat::Jpeg),
        "gif" => Some(ImageFormat::Gif),
        "webp" => Some(ImageFormat::Webp),
        _ => None,
    }
}

/// The tokens an image of `width` × `height` pixels is counted as: the
/// estimate Anthropic documents (pixels / 750, after scaling the long edge
/// down to 1568), which is at or above what OpenAI charges for the same
/// image at high detail; [`UNKNOWN_IMAGE_TOKENS`] when the size is not known.
pub fn image_tokens(size: Option<(u32, u32)>) -> usize {
    let Some((w, h)) = size else {
        return UNKNOWN_IMAGE_TOKENS;
    };
    let (w, h) = (f64::from(w.max(1)), f64::from(h.max(1)));
    let scale = (1568.0 / w.max(h)).min(1.0);
    let pixels = (w * scale) * (h * scale);
    // At most a few million: the cast cannot overflow.
    ((pixels / 750.0).ceil() as usize).clamp(1, UNKNOWN_IMAGE_TOKENS)
}

/// Where an image's content is: its bytes, or a URL.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ImageSource {
    /// The bytes (base64 in JSON).
    Bytes(#[serde(with = "base64_bytes")] Arc<[u8]>),
    /// A URL the provider fetches.
    Url(String),
}

impl ImageSource {
    /// The bytes as base64 (standard alphabet, padded), as both providers
    /// take them; `None` for a URL.
    pub fn base64(&self) -> Option<String> {
        match self {
            ImageSource::Bytes(data) => {
                Some(base64::engine::general_purpose::STANDARD.encode(data))
            }
            ImageSource::Url(_) => None,
        }
    }
}

impl fmt::Debug for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageSource::Bytes(data) => write!(f, "Bytes({} bytes)", data.len()),
            ImageSource::Url(url) => f.debug_tuple("Url").field(url).finish(),
        }
    }
}

mod base64_vec {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(data))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(serde::de::Error::custom)
    }
}

mod base64_bytes {
    use std::sync::Arc;

    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(data: &Arc<[u8]>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(data))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<[u8]>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Arc::from)
            .map_err(serde::de::Error::custom)
    }
}

/// An image as a model request carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatImage {
    /// Its media type, when known (`image/png`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Its content.
    pub source: ImageSource,
    /// Its width and height in pixels, when known (for the token estimate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<(u32, u32)>,
}

impl ChatImage {
    /// An image of `format` given as bytes.
    pub fn bytes(format: ImageFormat, data: impl Into<Arc<[u8]>>) -> Self {
        let data = data.into();
        let size = dimensions(&data);
        Self {
            media_type: Some(format.media_type().to_owned()),
            source: ImageSource::Bytes(data),
            size,
        }
    }

    /// An image the provider fetches from `url`.
    pub fn url(url: impl Into<String>) -> Self {
        let url = url.into();
        Self {
            media_type: url_format(&url).map(|f| f.media_type().to_owned()),
            source: ImageSource::Url(url),
            size: None,
        }
    }

    /// Its media type: as given, or read from its bytes; `None` for a URL
    /// that names none.
    pub fn media_type(&self) -> Option<String> {
        self.media_type.clone().or_else(|| match &self.source {
            ImageSource::Bytes(data) => ImageFormat::sniff(data).map(|f| f.media_type().to_owned()),
            ImageSource::Url(_) => None,
        })
    }

    /// The tokens it is counted as ([`image_tokens`]).
    pub fn tokens(&self) -> usize {
        image_tokens(self.size)
    }
}

/// An image to store, checked ([`NewImage::checked`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NewImage {
    /// Whose message carried it.
    pub principal: Principal,
    /// Its format, when known.
    pub format: Option<ImageFormat>,
    /// Its width and height in pixels, when known.
    pub size: Option<(u32, u32)>,
    /// Its content.
    pub source: ImageSource,
    /// SHA-256 of its bytes (of `url:` and the URL for a URL), hex: a user's
    /// same image is stored once.
    pub sha256: String,
}

impl NewImage {
    /// Checks `input` ([`check`]) and makes it an image of `principal`.
    pub fn checked(
        principal: Principal,
        input: ImageInput,
        max_bytes: usize,
    ) -> Result<Self, ImageError> {
        let facts = check(&input, max_bytes)?;
        let (source, digest) = match input {
            ImageInput::Bytes { data, .. } => {
                let digest = Sha256::digest(&data);
                (ImageSource::Bytes(Arc::from(data)), digest)
            }
            ImageInput::Url { url } => {
                let digest = Sha256::new()
                    .chain_update(b"url:")
                    .chain_update(url.as_bytes())
                    .finalize();
                (ImageSource::Url(url), digest)
            }
        };
        Ok(Self {
            principal,
            format: facts.format,
            size: facts.size,
            source,
            sha256: hex(&digest),
        })
    }

    /// The image as a store writes it: with `id`, at `now`.
    pub fn created(self, id: ImageId, now: Timestamp) -> Image {
        Image {
            id,
            principal: self.principal,
            format: self.format,
            size: self.size,
            source: self.source,
            sha256: self.sha256,
            created_at: now,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A stored image.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Image {
    /// Its id.
    pub id: ImageId,
    /// Whose message carried it.
    pub principal: Principal,
    /// Its format, when known.
    pub format: Option<ImageFormat>,
    /// Its width and height in pixels, when known.
    pub size: Option<(u32, u32)>,
    /// Its content.
    pub source: ImageSource,
    /// SHA-256 of its content, hex.
    pub sha256: String,
    /// When it was first stored.
    pub created_at: Timestamp,
}

impl Image {
    /// The image as a model request carries it.
    pub fn chat_image(&self) -> ChatImage {
        ChatImage {
            media_type: self.format.map(|f| f.media_type().to_owned()),
            source: self.source.clone(),
            size: self.size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2 × 3 PNG.
    pub(crate) const PNG: &[u8] = &[
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52, 0,
        0, 0, 2, 0, 0, 0, 3, 8, 2, 0, 0, 0, 0x12, 0x16, 0xf1, 0x4d,
    ];

    #[test]
    fn bytes_are_read_for_their_format_and_size() {
        let facts = check(&ImageInput::bytes(PNG), 1024).unwrap();
        assert_eq!(facts.format, Some(ImageFormat::Png));
        assert_eq!(facts.size, Some((2, 3)));
        assert!(check(&ImageInput::bytes_of_type(PNG, "image/png"), 1024).is_ok());
        assert_eq!(
            check(&ImageInput::bytes_of_type(PNG, "image/jpeg"), 1024),
            Err(ImageError::TypeMismatch {
                declared: "image/jpeg".into(),
                found: "image/png"
            })
        );
        assert_eq!(
            check(&ImageInput::bytes_of_type(PNG, "image/bmp"), 1024),
            Err(ImageError::UnsupportedType("image/bmp".into()))
        );
        assert_eq!(
            check(&ImageInput::bytes(b"hello".to_vec()), 1024),
            Err(ImageError::NotAnImage)
        );
        // A PNG cut off before its dimensions.
        assert_eq!(
            check(&ImageInput::bytes(&PNG[..14]), 1024),
            Err(ImageError::NotAnImage)
        );
        assert_eq!(
            check(&ImageInput::bytes(Vec::new()), 1024),
            Err(ImageError::Empty)
        );
        assert_eq!(
            check(&ImageInput::bytes(PNG), 10),
            Err(ImageError::TooLarge {
                size: PNG.len(),
                limit: 10
            })
        );
    }

    #[test]
    fn only_plain_web_urls_are_accepted() {
        for ok in ["https://example.com/a.png", "http://example.com/x?y=1"] {
            assert!(check(&ImageInput::url(ok), 0).is_ok(), "{ok}");
        }
        for bad in [
            "file:///etc/passwd",
            "data:image/png;base64,AAAA",
            "https://user:secret@example.com/a.png",
            "https:///a.png",
            "https://example.com/a b.png",
        ] {
            assert!(
                matches!(check(&ImageInput::url(bad), 0), Err(ImageError::BadUrl(_))),
                "{bad}"
            );
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert!(check(&ImageInput::url(long), 0).is_err());
    }

    #[test]
    fn tokens_follow_the_documented_estimate() {
        assert_eq!(image_tokens(Some((2, 3))), 1);
        assert_eq!(image_tokens(Some((1000, 1000))), 1334);
        // Scaled down to 1568 on its long edge first.
        assert_eq!(image_tokens(Some((4000, 100))), 82);
        assert_eq!(image_tokens(None), UNKNOWN_IMAGE_TOKENS);
    }

    #[test]
    fn the_same_content_hashes_the_same_and_bytes_never_print() {
        let p = Principal::new(crate::ids::AccountId::new(), crate::ids::UserId::new());
        let a = NewImage::checked(p, ImageInput::bytes(PNG), 1024).unwrap();
        let b = NewImage::checked(p, ImageInput::bytes_of_type(PNG, "image/png"), 1024).unwrap();
        assert_eq!(a.sha256, b.sha256);
        let u = NewImage::checked(p, ImageInput::url("https://example.com/a.png"), 0).unwrap();
        assert_ne!(a.sha256, u.sha256);
        assert_eq!(u.format, Some(ImageFormat::Png));
        assert!(format!("{a:?}").contains(&format!("Bytes({} bytes)", PNG.len())));
        let json = serde_json::to_string(&a.source).unwrap();
        let back: ImageSource = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a.source);
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any bytes, declared type or URL: a typed answer, never a panic;
        /// what is accepted is within the limit and of the format its
        /// bytes show.
        #[test]
        fn any_image_input_is_checked_without_panic(
            data in proptest::collection::vec(any::<u8>(), 0..256),
            prefix in prop_oneof![
                Just(&b""[..]),
                Just(&b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"[..]),
                Just(&b"\xff\xd8\xff"[..]),
                Just(&b"GIF89a"[..]),
                Just(&b"RIFF\0\0\0\0WEBPVP8 "[..]),
            ],
            declared in proptest::option::of("[ -~]{0,40}"),
            url in "[ -~]{0,80}",
            limit in 0usize..300,
        ) {
            let mut bytes = prefix.to_vec();
            bytes.extend(data);
            let input = ImageInput::Bytes { data: bytes.clone(), media_type: declared };
            if let Ok(facts) = check(&input, limit) {
                prop_assert!(facts.bytes <= limit);
                prop_assert_eq!(facts.format, ImageFormat::sniff(&bytes));
                prop_assert!(facts.size.is_some_and(|(w, h)| w > 0 && h > 0));
            }
            if check(&ImageInput::url(url.clone()), limit).is_ok() {
                prop_assert!(url.starts_with("https://") || url.starts_with("http://"));
                prop_assert!(!url.contains(' '));
            }
        }
    }
}
