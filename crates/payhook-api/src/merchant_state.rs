//! `POST /v1/merchants/{id}/pause`, `/resume`, `/archive` (admin only): the operator's hold
//! on a merchant, and `/recover`, its bulk recovery after an outage. What each means is
//! `payhook_core::lifecycle::merchant`'s and `lifecycle::recovery`'s.

use crate::audit;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::Json;
use crate::merchants::load;
use crate::{views, AppState};
use axum::extract::{Path, State};
use payhook_core::lifecycle::merchant::HOLDS_DELIVERIES;
use payhook_core::lifecycle::{self, recovery, MerchantAction};
use payhook_core::model::AuditAction;
use payhook_core::Timestamp;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

fn audited(action: MerchantAction) -> AuditAction {
    match action {
        MerchantAction::Pause => AuditAction::MerchantPaused,
        MerchantAction::Resume => AuditAction::MerchantResumed,
        MerchantAction::Archive => AuditAction::MerchantArchived,
    }
}

async fn apply(
    state: &AppState,
    caller: &Caller,
    id: &str,
    action: MerchantAction,
) -> Result<axum::Json<Value>, ApiError> {
    caller.require_admin()?;
    let mut m = load(state, id).await?;
    let next = lifecycle::change_state(m.state, action)?;
    if next != m.state {
        let was = m.state;
        let now = state.clock.now();
        let entry = audit::entry(caller, audited(action), &m.id, json!({}), now);
        state.store.set_merchant_state(&m.id, next, &entry).await?;
        (m.state, m.updated_at) = (next, now);
        if was == HOLDS_DELIVERIES {
            // What waited is due now: this node's dispatcher looks at once, others at their poll.
            state.wake_dispatcher();
        }
    }
    Ok(axum::Json(views::merchant(&m)))
}

/// Holds the merchant's callbacks: reports are still accepted, their deliveries wait
/// unattempted (no retry budget spent) until it is resumed; a newer status supersedes an
/// older one waiting. Attempts already under way finish.
#[utoipa::path(post, path = "/v1/merchants/{id}/pause", tag = "merchants",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Merchant id (mer_…)")),
    responses(
        (status = 200, description = "The merchant, paused (already paused: unchanged)", body = crate::openapi::MerchantView),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Admin only", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 409, description = "The merchant is archived (`merchant_archived`)", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody)))]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    apply(&state, &caller, &id, MerchantAction::Pause).await
}

/// Lets the merchant's callbacks go again: each operation's latest waiting status is sent,
/// in per-operation order.
#[utoipa::path(post, path = "/v1/merchants/{id}/resume", tag = "merchants",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Merchant id (mer_…)")),
    responses(
        (status = 200, description = "The merchant, active (already active: unchanged)", body = crate::openapi::MerchantView),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Admin only", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 409, description = "The merchant is archived (`merchant_archived`)", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    apply(&state, &caller, &id, MerchantAction::Resume).await
}

/// No new operations for the merchant (409 `merchant_archived`); reads, reports on its
/// existing operations and their callbacks go on, and its history ages out with retention.
/// Archiving a paused merchant lets its waiting callbacks go.
#[utoipa::path(post, path = "/v1/merchants/{id}/archive", tag = "merchants",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Merchant id (mer_…)")),
    responses(
        (status = 200, description = "The merchant, archived (already archived: unchanged)", body = crate::openapi::MerchantView),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Admin only", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody)))]
pub async fn archive(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    apply(&state, &caller, &id, MerchantAction::Archive).await
}

/// `POST /v1/merchants/{id}/recover`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverRequest {
    /// RFC 3339: deliveries that ended at or after this are queued again.
    #[schema(format = DateTime)]
    since: String,
}

/// After the merchant's outage: re-enables its disabled destinations and queues again, once,
/// the latest delivery of each of its operations that ended `exhausted`, or `cancelled`
/// because its destination was disabled, at or after `since`. A repeat while those wait
/// queues nothing twice.
#[utoipa::path(post, path = "/v1/merchants/{id}/recover", tag = "merchants",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Merchant id (mer_…)")),
    request_body = RecoverRequest,
    responses(
        (status = 200, description = "How many deliveries were queued again", body = crate::openapi::Recovered),
        (status = 400, description = "Malformed body", body = crate::openapi::ErrorBody),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Admin only", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "since is not an RFC 3339 time, or is in the future", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody)))]
pub async fn recover(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<RecoverRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    caller.require_admin()?;
    let m = load(&state, &id).await?;
    let since = Timestamp::parse_rfc3339(&body.since).ok_or_else(|| {
        ApiError::invalid(
            "invalid_time",
            "since",
            "since is an RFC 3339 time, e.g. 2026-12-05T00:00:00Z",
        )
    })?;
    let now = state.clock.now();
    recovery::check_since(since, now)
        .map_err(|e| ApiError::invalid("invalid_time", "since", e.to_string()))?;
    let detail = json!({ "since": since.rfc3339_millis() });
    let entry = audit::entry(&caller, AuditAction::MerchantRecovered, &m.id, detail, now);
    let queued = state.store.recover(&m.id, since, &entry).await?;
    state.wake_dispatcher();
    Ok(axum::Json(json!({ "queued": queued })))
}
