//! Extractors whose rejections speak the API's error form, and the JSON body limits.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

/// Request bodies may nest JSON arrays and objects at most this deep (serde_json itself
/// stops at 128; payhook's own shapes need 5).
pub const MAX_DEPTH: usize = 32;

/// A JSON body: `content-type: application/json` (415 otherwise), at most [`crate::BODY_LIMIT`]
/// bytes (413 `body_too_large`), nested at most [`MAX_DEPTH`] deep (400 `too_deep`), then
/// parsed (400 `malformed_request`).
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send content-type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        parse(&bytes).map(Json)
    }
}

/// The body rules after the content type: depth, then syntax and shape.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if nesting_exceeds(bytes, MAX_DEPTH) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_deep",
            format!("JSON nested deeper than {MAX_DEPTH} levels is refused"),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::malformed(e.to_string()))
}

/// Whether arrays and objects in `bytes` nest deeper than `max`, counted outside strings.
/// Malformed input is left to the parser.
pub fn nesting_exceeds(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

fn body_error(r: BytesRejection) -> ApiError {
    match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request bodies are limited to {} bytes", crate::BODY_LIMIT),
        ),
        _ => ApiError::malformed(r.body_text()),
    }
}

/// `axum::extract::Query` with a 400 in the spec's form.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|r: QueryRejection| ApiError::malformed(r.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_is_counted_outside_strings() {
        assert!(!nesting_exceeds(nested(32).as_bytes(), 32));
        assert!(nesting_exceeds(nested(33).as_bytes(), 32));
        let mut deep_object = String::new();
        for _ in 0..40 {
            deep_object.push_str("{\"a\":");
        }
        assert!(nesting_exceeds(deep_object.as_bytes(), 32), "objects count, even unclosed");
        let brackets_in_a_string =
            format!("{{\"s\":\"{}\\\"{}\"}}", "[".repeat(100), "{".repeat(100));
        assert!(!nesting_exceeds(brackets_in_a_string.as_bytes(), 32), "{brackets_in_a_string}");
    }

    #[test]
    fn parse_answers_too_deep_then_malformed() {
        let e = parse::<serde_json::Value>(nested(200).as_bytes()).expect_err("deep");
        assert_eq!((e.status.as_u16(), e.code), (400, "too_deep"));
        let e = parse::<serde_json::Value>(b"{not json").expect_err("bad");
        assert_eq!((e.status.as_u16(), e.code), (400, "malformed_request"));
        assert!(parse::<serde_json::Value>(nested(32).as_bytes()).is_ok());
    }
}
