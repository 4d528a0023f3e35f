//! Extractors whose rejections speak the API's error form, and the JSON body limits.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use serde::de::{DeserializeOwned, Error as _, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::HashSet;

/// Request bodies may nest JSON arrays and objects at most this deep (serde_json itself
/// stops at 128; payhook's own shapes need 5).
pub const MAX_DEPTH: usize = 32;

/// A JSON body, by the one parser policy every route shares: `content-type:
/// application/json`, optionally with `charset=utf-8` (`PATCH` also takes
/// `application/merge-patch+json`, which is what its semantics are), 415 otherwise; at most
/// [`crate::BODY_LIMIT`] bytes (413 `body_too_large`); nested at most [`MAX_DEPTH`] deep (400
/// `too_deep`); no object with the same key twice (400 `duplicate_key`: one reader of a
/// request must not see what another misses); then parsed (400 `malformed_request`).
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !accepted_media_type(req.method(), req.headers()) {
            let also =
                if req.method() == Method::PATCH { " or application/merge-patch+json" } else { "" };
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("send content-type: application/json{also}"),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        parse(&bytes).map(Json)
    }
}

/// The body rules after the content type: depth, duplicate keys, then syntax and shape.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if nesting_exceeds(bytes, MAX_DEPTH) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_deep",
            format!("JSON nested deeper than {MAX_DEPTH} levels is refused"),
        ));
    }
    if let Err(e) = serde_json::from_slice::<UniqueKeys>(bytes) {
        // A broken body is malformed, whatever keys it repeats before it breaks.
        let well_formed = serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok();
        if e.is_data() && well_formed {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "duplicate_key", e.to_string()));
        }
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::malformed(e.to_string()))
}

/// Any JSON value in which no object holds a key twice (serde_json keeps the last).
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<UniqueKeys, A::Error> {
        while items.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(A::Error::custom(format!("the key {key:?} appears twice")));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
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

/// `application/json` (for `PATCH` also `application/merge-patch+json`), with no parameter
/// but `charset=utf-8`.
fn accepted_media_type(method: &Method, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut parts = value.split(';').map(|p| p.trim().to_ascii_lowercase());
    let essence = parts.next().unwrap_or_default();
    let json = essence == "application/json"
        || (method == Method::PATCH && essence == "application/merge-patch+json");
    let utf8 =
        |p: &str| matches!(p.replace(' ', "").as_str(), "charset=utf-8" | "charset=\"utf-8\"");
    json && parts.all(|p| utf8(&p))
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
    fn a_key_twice_in_any_object_is_refused() {
        for body in [
            r#"{"merchant_id":"a","merchant_id":"b"}"#,
            r#"{"items":[{"status":"x","status":"y"}]}"#,
            r#"{"a":{"b":1,"c":{"d":1,"d":2}}}"#,
        ] {
            let e = parse::<serde_json::Value>(body.as_bytes()).expect_err(body);
            assert_eq!((e.status.as_u16(), e.code), (400, "duplicate_key"), "{body}");
        }
        let fine = r#"{"a":{"k":1},"b":{"k":2},"c":[{"k":1},{"k":1}]}"#;
        assert!(parse::<serde_json::Value>(fine.as_bytes()).is_ok(), "same key, other objects");
        let e = parse::<serde_json::Value>(br#"{"a":1,"a""#).expect_err("broken");
        assert_eq!(e.code, "malformed_request", "syntax errors stay malformed");
    }

    #[test]
    fn only_json_with_a_utf8_charset_and_merge_patch_for_patch() {
        let check = |method: Method, value: &str, expect: bool| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, value.parse().expect("header"));
            assert_eq!(accepted_media_type(&method, &h), expect, "{method} {value}");
        };
        check(Method::POST, "application/json", true);
        check(Method::POST, "Application/JSON; charset=UTF-8", true);
        check(Method::POST, "application/json; charset=\"utf-8\"", true);
        check(Method::POST, "application/json; charset=latin1", false);
        check(Method::POST, "application/json; boundary=x", false);
        check(Method::POST, "application/merge-patch+json", false);
        check(Method::PATCH, "application/merge-patch+json", true);
        check(Method::POST, "application/vnd.api+json", false);
        check(Method::POST, "text/plain", false);
        assert!(!accepted_media_type(&Method::POST, &HeaderMap::new()), "no content type");
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
