//! Deliveries: an operation's deliveries with every attempt, and resend.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::operations::visible_operation;
use crate::{views, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use payhook_core::ids::DeliveryId;
use serde_json::{json, Value};

#[utoipa::path(get, path = "/v1/operations/{id}/deliveries", tag = "deliveries",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Operation id (op_…)")),
    responses(
        (status = 200, description = "Deliveries with every attempt", body = crate::openapi::DeliveryList),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not yours", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody)))]
pub async fn of_operation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let op = visible_operation(&state, &caller, &id).await?;
    let list = state.store.deliveries_of(&op.id).await?;
    let data: Vec<Value> = list.iter().map(|(d, a)| views::delivery(d, Some(a))).collect();
    Ok(axum::Json(json!({ "data": data })))
}

/// Starts a new attempt series now, under the same delivery id.
#[utoipa::path(post, path = "/v1/deliveries/{id}/resend", tag = "deliveries",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Delivery id (dlv_…)")),
    responses(
        (status = 202, description = "A new attempt series starts now", body = crate::openapi::DeliveryView),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not yours", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 409, description = "Conflict", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody)))]
pub async fn resend(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let id: DeliveryId = id.parse().map_err(|_| ApiError::not_found("delivery"))?;
    let d = state.store.get_delivery(&id).await?.ok_or_else(|| ApiError::not_found("delivery"))?;
    caller.require_access(&d.merchant_id)?;
    let d = state.store.resend(&id, state.clock.now()).await?;
    state.wake_dispatcher();
    Ok((StatusCode::ACCEPTED, axum::Json(views::delivery(&d, None))))
}
