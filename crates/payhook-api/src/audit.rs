//! The audit log: every admin action on a merchant (pause, resume, archive, recover) and
//! every key created or revoked, written by the store in the action's own transaction, and
//! `GET /v1/audit` (admin only) to read it.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::Query;
use crate::{views, AppState};
use axum::extract::State;
use payhook_core::ids::MerchantId;
use payhook_core::model::AuditAction;
use payhook_core::Timestamp;
use payhook_store::{Actor, AuditEntry, AuditQuery};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::IntoParams;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// The entry recording `action` by `caller` on merchant `m` at `now`.
pub fn entry(
    caller: &Caller,
    action: AuditAction,
    m: &MerchantId,
    detail: Value,
    now: Timestamp,
) -> AuditEntry {
    let actor = match caller {
        Caller::Admin => Actor::Admin,
        Caller::Merchant(_) => Actor::Merchant,
    };
    AuditEntry { at: now, actor, action, merchant: m.clone(), detail }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// A page's `next_after` (a log position); 0 or left out from the oldest entry.
    #[serde(default)]
    #[param(minimum = 0, required = false)]
    after: i64,
    /// Only this merchant's entries.
    #[param(required = false)]
    merchant_id: Option<String>,
    /// 1..=1000, default 100.
    #[param(minimum = 1, maximum = 1000, required = false)]
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "ops", operation_id = "read_audit", security(("bearer" = [])),
    params(AuditParams),
    responses(
        (status = 200, description = "Audit entries, oldest first", body = crate::openapi::AuditPage),
        (status = 400, description = "Malformed query", body = crate::openapi::ErrorBody),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Admin only", body = crate::openapi::ErrorBody),
        (status = 422, description = "limit outside 1..=1000, after below 0, or merchant_id not a merchant id", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody)))]
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditParams>,
) -> Result<axum::Json<Value>, ApiError> {
    caller.require_admin()?;
    let limit = crate::validate::page(q.after, q.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let merchant = q
        .merchant_id
        .map(|m| {
            m.parse::<MerchantId>().map_err(|_| {
                ApiError::invalid(
                    "invalid_field",
                    "merchant_id",
                    "merchant_id is a merchant id (mer_…)",
                )
            })
        })
        .transpose()?;
    let query = AuditQuery { after: q.after, merchant, limit };
    let records = state.store.audit_log(&query).await?;
    let next_after = records.last().map_or(q.after, |r| r.position);
    let data: Vec<Value> = records.iter().map(views::audit_record).collect();
    Ok(axum::Json(json!({ "data": data, "next_after": next_after })))
}
