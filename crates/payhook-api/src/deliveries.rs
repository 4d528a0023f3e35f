//! Deliveries: an operation's deliveries with every attempt, and resend.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::operations::visible_operation;
use crate::{views, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use payhook_core::ids::DeliveryId;
use serde_json::{json, Value};

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
