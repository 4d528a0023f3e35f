//! Liveness and readiness.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::State;
use axum::Json;
use payhook_store::StoreError;
use serde_json::{json, Value};

#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "Alive", body = crate::openapi::Health)))]
pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the store answers and its last write did not fail for a full disk.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, description = "The store answers", body = crate::openapi::Health),
        (status = 503, description = "The store is unreachable (`store_unavailable`, with the \
            reason and Retry-After), or its disk is full (`storage_full`: the last write failed \
            for want of space)",
            body = crate::openapi::ErrorBody)))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    // The store keeps the state: SQLite's writer remembers whether its last write failed for
    // a full disk (see `payhook_store::sqlite::writer`), so this stays one read while writes
    // commit.
    state.store.ping().await.map_err(|e| match e {
        StoreError::StorageFull(cause) => {
            tracing::warn!(error = %cause, "readiness: the store's disk is full");
            ApiError::storage_full(
                "the store's disk is full: the last write failed for want of space",
            )
        }
        e => {
            tracing::warn!(error = %e, "readiness: store unreachable");
            ApiError::store_unavailable(format!("store unreachable: {}", reason(&e)))
        }
    })?;
    Ok(Json(json!({"status": "ready"})))
}

/// Why the store did not answer, in words that name no host, user or query (the driver's
/// message stays in the log).
fn reason(e: &StoreError) -> &'static str {
    let StoreError::Unavailable(cause) = e else { return "the store failed (see the log)" };
    let cause = cause.to_ascii_lowercase();
    if cause.contains("refused") {
        "the database refuses connections"
    } else if cause.contains("no answer") || cause.contains("timed out") || cause.contains("within")
    {
        "the database does not answer in time"
    } else if cause.contains("57p") || cause.contains("shut") || cause.contains("starting up") {
        "the database is shutting down or starting up"
    } else {
        "the connection to the database was lost"
    }
}
