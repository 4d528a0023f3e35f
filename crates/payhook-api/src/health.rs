//! Liveness and readiness.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "Alive", body = crate::openapi::Health)))]
pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the store answers.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, description = "The store answers", body = crate::openapi::Health),
        (status = 503, description = "The store is unreachable", body = crate::openapi::ErrorBody)))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness: store unreachable");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "store unreachable")
    })?;
    Ok(Json(json!({"status": "ready"})))
}
