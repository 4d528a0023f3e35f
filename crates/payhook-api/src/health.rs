//! Liveness and readiness.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the store answers.
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness: store unreachable");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "store unreachable")
    })?;
    Ok(Json(json!({"status": "ready"})))
}
