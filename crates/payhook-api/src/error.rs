//! `ApiError`: every failure leaves as `{"error":{"code","message","field?"}}` with its status.
//! 5xx causes are logged, never shown.

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use payhook_store::StoreError;
use serde_json::json;

/// Every error code the API answers, by HTTP status: the OpenAPI document's enum of `code`
/// for each status (see `openapi::refine`). A test keeps it equal to the codes the source
/// can produce.
pub const CODES: &[(u16, &[&str])] = &[
    (400, &["malformed_request", "too_deep", "duplicate_key"]),
    (401, &["unauthorized"]),
    (403, &["forbidden"]),
    (404, &["not_found", "no_return_url", "no_watch"]),
    (405, &["method_not_allowed"]),
    (
        409,
        &[
            "invalid_transition",
            "event_key_conflict",
            "external_id_conflict",
            "superseded",
            "conflict",
            "not_final",
            "merchant_archived",
            "too_many_keys",
            "last_key",
        ],
    ),
    (410, &["cursor_expired"]),
    (413, &["body_too_large"]),
    (415, &["unsupported_media_type"]),
    (
        422,
        &[
            "allowed_callback_urls_required",
            "blocked_target",
            "callback_url_not_allowed",
            "callback_url_required",
            "encryption_key_missing",
            "field_too_long",
            "invalid_amount",
            "invalid_batch",
            "invalid_currency",
            "invalid_cursor",
            "invalid_data",
            "invalid_encryption_key",
            "invalid_field",
            "invalid_limit",
            "invalid_retry_policy",
            "invalid_setting",
            "invalid_status_source",
            "invalid_time",
            "invalid_url",
            "unknown_dialect",
            "unknown_merchant",
            "unknown_setting",
            "unknown_status",
        ],
    ),
    (429, &["rate_limited"]),
    (500, &["internal"]),
    (503, &["store_unavailable", "storage_full"]),
];

/// `Retry-After` of a `storage_full` answer, in seconds: freeing disk space takes an operator.
pub const STORAGE_FULL_RETRY_AFTER: u64 = 30;

/// `Retry-After` of a `store_unavailable` answer, in seconds: a restarting or failing-over
/// database is usually back within seconds, and a node retries its connections on every call.
pub const STORE_UNAVAILABLE_RETRY_AFTER: u64 = 5;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Seconds for a `Retry-After` header (429, 503 `storage_full` and `store_unavailable`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field: None, retry_after: None }
    }

    pub fn on(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", message)
    }

    pub fn invalid(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).on(field)
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    pub fn unauthorized() -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or invalid bearer token")
    }

    pub fn forbidden() -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this token may not do that")
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(cause = %cause, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found("resource"),
            StoreError::InvalidTransition(t) => {
                ApiError::new(StatusCode::CONFLICT, "invalid_transition", t.to_string())
                    .on("status")
            }
            StoreError::EventKeyConflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "event_key_conflict", e.to_string())
                    .on("event_key")
            }
            StoreError::Superseded => ApiError::new(
                StatusCode::CONFLICT,
                "superseded",
                "a newer delivery of this operation exists; resending this one would send a \
                 stale status",
            ),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::CursorExpired { .. } => ApiError::new(
                StatusCode::GONE,
                "cursor_expired",
                format!("{e}: start again with after=0 (the oldest event kept)"),
            )
            .on("after"),
            StoreError::KeyRefused(refusal) => refusal.into(),
            // Nothing was stored: the caller must send it again once space is freed.
            StoreError::StorageFull(cause) => {
                tracing::error!(cause = %cause, "write refused: the store's disk is full");
                ApiError::storage_full(
                    "the store's disk is full: nothing was stored; retry once space is freed",
                )
            }
            // The database cannot be reached: a write may or may not have been stored, and
            // sending it again is safe (event keys, external ids).
            StoreError::Unavailable(cause) => {
                tracing::warn!(cause = %cause, "the store is unavailable");
                ApiError::store_unavailable(
                    "the database cannot be reached; retry (a write answered so may or may not \
                     have been stored: a report with the same event_key, a registration with \
                     the same external_id, is applied once)",
                )
            }
            StoreError::Backend(_) | StoreError::MasterKey(_) => ApiError::internal(e),
        }
    }
}

impl ApiError {
    /// 503 `storage_full` with its `Retry-After`: the store's disk is full.
    pub fn storage_full(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_full", message)
            .with_retry_after(STORAGE_FULL_RETRY_AFTER)
    }

    /// 503 `store_unavailable` with its `Retry-After`: the database cannot be reached.
    pub fn store_unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", message)
            .with_retry_after(STORE_UNAVAILABLE_RETRY_AFTER)
    }

    /// The `{"code","message","field?"}` object.
    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(field) = &self.field {
            error["field"] = json!(field);
        }
        error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.body() }))).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// A route that exists, asked with a method it does not take.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

impl From<payhook_core::lifecycle::KeyRefusal> for ApiError {
    fn from(e: payhook_core::lifecycle::KeyRefusal) -> Self {
        use payhook_core::lifecycle::KeyRefusal;
        match e {
            KeyRefusal::TooMany => {
                ApiError::new(StatusCode::CONFLICT, "too_many_keys", e.to_string())
            }
            KeyRefusal::LastKey => ApiError::new(StatusCode::CONFLICT, "last_key", e.to_string()),
        }
    }
}

impl From<payhook_core::lifecycle::Archived> for ApiError {
    fn from(e: payhook_core::lifecycle::Archived) -> Self {
        ApiError::new(StatusCode::CONFLICT, "merchant_archived", e.to_string())
    }
}

impl From<payhook_core::lifecycle::RuleViolation> for ApiError {
    fn from(v: payhook_core::lifecycle::RuleViolation) -> Self {
        ApiError::invalid(v.code, v.field, v.message)
    }
}

#[cfg(test)]
mod tests {
    use super::CODES;
    use std::collections::BTreeSet;

    /// The snake_case string literal that starts `text` (after blanks), if any: an error
    /// code, not a plain-text body such as `/metrics`' own 503.
    fn literal(text: &str) -> Option<&str> {
        let rest = text.trim_start().strip_prefix('"')?;
        let word = rest.split('"').next()?;
        word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_').then_some(word)
    }

    /// `(status, code)` of every error the sources can build: `StatusCode::X, "code"`, and
    /// the 422s of `ApiError::invalid("code"` and the lifecycle's `violation("code"`.
    fn built(source: &str) -> BTreeSet<(u16, String)> {
        let mut out = BTreeSet::new();
        for (i, _) in source.match_indices("StatusCode::") {
            let rest = &source[i + "StatusCode::".len()..];
            let name: String =
                rest.chars().take_while(|c| c.is_ascii_uppercase() || *c == '_').collect();
            let after = rest[name.len()..].trim_start();
            let Some(code) = after.strip_prefix(',').and_then(literal) else { continue };
            let status =
                axum::http::StatusCode::from_bytes(name.as_bytes()).ok().map(|s| s.as_u16());
            let status = status.or_else(|| status_named(&name));
            out.insert((status.expect("a known status"), code.to_owned()));
        }
        for call in ["invalid(", "violation("] {
            for (i, _) in source.match_indices(call) {
                if let Some(code) = literal(&source[i + call.len()..]) {
                    out.insert((422, code.to_owned()));
                }
            }
        }
        out
    }

    fn status_named(name: &str) -> Option<u16> {
        use axum::http::StatusCode as S;
        let all = [
            S::BAD_REQUEST,
            S::UNAUTHORIZED,
            S::FORBIDDEN,
            S::NOT_FOUND,
            S::METHOD_NOT_ALLOWED,
            S::CONFLICT,
            S::GONE,
            S::PAYLOAD_TOO_LARGE,
            S::UNSUPPORTED_MEDIA_TYPE,
            S::UNPROCESSABLE_ENTITY,
            S::TOO_MANY_REQUESTS,
            S::INTERNAL_SERVER_ERROR,
            S::SERVICE_UNAVAILABLE,
        ];
        let wanted = name.replace('_', " ");
        all.iter()
            .find(|s| s.canonical_reason().is_some_and(|r| r.to_uppercase() == wanted))
            .map(|s| s.as_u16())
    }

    #[test]
    fn the_code_table_is_every_code_the_api_can_answer() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let mut files: Vec<String> = std::fs::read_dir(format!("{root}/payhook-api/src"))
            .expect("src")
            .map(|e| e.expect("entry").path().display().to_string())
            .filter(|p| p.ends_with(".rs"))
            .collect();
        files.push(format!("{root}/payhook-core/src/lifecycle/register.rs"));
        let mut found = BTreeSet::new();
        for f in files.iter().filter(|f| !f.ends_with("error.rs")) {
            found.extend(built(&std::fs::read_to_string(f).expect("source")));
        }
        found.extend(built(include_str!("error.rs").split("#[cfg(test)]").next().expect("code")));
        let table: BTreeSet<(u16, String)> = CODES
            .iter()
            .flat_map(|(s, codes)| codes.iter().map(move |c| (*s, c.to_string())))
            .collect();
        assert_eq!(found, table, "error::CODES and the source disagree");
    }
}
