//! `GET /v1/events`: a merchant's events in order, by cursor — the reconciliation feed.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::Query;
use crate::{views, AppState};
use axum::extract::State;
use payhook_core::ids::MerchantId;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::IntoParams;

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// Required for the admin (400 without); a merchant key may leave it out, and then reads
    /// its own feed.
    #[param(value_type = String)]
    merchant_id: Option<String>,
    /// A feed position (`next_after` of the previous page); 0 from the oldest event kept. A
    /// position before events retention has purged is refused (410 `cursor_expired`).
    #[serde(default)]
    #[param(minimum = 0)]
    after: i64,
    /// 1..=1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/events", tag = "events", security(("bearer" = [])),
    params(FeedQuery),
    responses(
        (status = 200, description = "The merchant's events in order", body = crate::openapi::EventFeed),
        (status = 400, description = "Malformed body or query", body = crate::openapi::ErrorBody),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not yours", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 410, description = "`after` points before events retention has purged \
            (`cursor_expired`; the message names the oldest position kept)", body = crate::openapi::ErrorBody),
        (status = 422, description = "limit outside 1..=1000 or after below 0", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody)))]
pub async fn feed(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<FeedQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let merchant: MerchantId = match (&caller, q.merchant_id.as_deref()) {
        (_, Some(m)) => m.parse().map_err(|_| ApiError::not_found("merchant"))?,
        (Caller::Merchant(own), None) => own.clone(),
        (Caller::Admin, None) => {
            return Err(ApiError::malformed("merchant_id is required").on("merchant_id"))
        }
    };
    caller.require_access(&merchant)?;
    let limit = crate::validate::page(q.after, q.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let events = state.store.events(&merchant, q.after, limit).await?;
    let next_after = events.last().map_or(q.after, |e| e.position);
    let data: Vec<Value> = events.iter().map(views::event).collect();
    Ok(axum::Json(json!({ "data": data, "next_after": next_after })))
}
