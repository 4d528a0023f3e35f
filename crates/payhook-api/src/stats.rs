//! `GET /v1/stats/deliveries` (admin): per merchant, deliveries by state, the success rate and
//! the oldest pending delivery — the dashboard's health table.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;
use axum::extract::State;
use payhook_store::MerchantDeliveryStats;
use serde_json::{json, Value};

fn row(s: &MerchantDeliveryStats, now: payhook_core::Timestamp) -> Value {
    json!({
        "merchant_id": s.merchant_id,
        "merchant_name": s.merchant_name,
        "delivered": s.delivered,
        "pending": s.pending,
        "exhausted": s.exhausted,
        "cancelled": s.cancelled,
        "superseded": s.superseded,
        "success_rate": s.success_rate(),
        "oldest_pending_at": s.oldest_pending_at.map(|t| t.rfc3339_millis()),
        "oldest_pending_age_seconds": s.oldest_pending_at.map(|t| now.since(t).as_secs()),
    })
}

#[utoipa::path(get, path = "/v1/stats/deliveries", tag = "deliveries",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Per-merchant delivery health", body = crate::openapi::DeliveryStats),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Admin only", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody)))]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Value>, ApiError> {
    caller.require_admin()?;
    let stats = state.store.delivery_stats().await?;
    let now = state.clock.now();
    let data: Vec<Value> = stats.iter().map(|s| row(s, now)).collect();
    Ok(axum::Json(json!({ "data": data })))
}
