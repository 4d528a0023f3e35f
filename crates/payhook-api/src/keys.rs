//! `/v1/merchants/{id}/keys`: a merchant's API keys — create (shown once), list, revoke.
//! The admin and the merchant itself may do each; how many keys a merchant holds is
//! `payhook_core::lifecycle::keys`'s rule, checked by the store with the change.

use crate::audit;
use crate::auth::{token_hash, Caller};
use crate::error::ApiError;
use crate::merchants::{load, new_api_key};
use crate::views::{self, ShownOnce};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use payhook_core::ids::ApiKeyId;
use payhook_core::lifecycle::keys;
use payhook_core::model::{AuditAction, Merchant};
use payhook_store::NewApiKey;
use serde_json::{json, Value};

async fn owned(state: &AppState, caller: &Caller, id: &str) -> Result<Merchant, ApiError> {
    let m = load(state, id).await?;
    caller.require_access(&m.id)?;
    Ok(m)
}

/// Makes a new key for the merchant: the key is in this answer only. A merchant holds at
/// most two keys: rotate by creating the new one, moving to it, and revoking the old.
#[utoipa::path(post, path = "/v1/merchants/{id}/keys", tag = "merchants", operation_id = "create_key",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Merchant id (mer_…)")),
    responses(
        (status = 201, description = "Created; the key is shown this once (`Cache-Control: no-store`)", body = crate::openapi::ApiKeyCreated),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not yours", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 409, description = "The merchant holds two keys already (`too_many_keys`)", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<ShownOnce<(StatusCode, axum::Json<Value>)>, ApiError> {
    let m = owned(&state, &caller, &id).await?;
    let now = state.clock.now();
    let secret = new_api_key();
    let key = NewApiKey::minted(&token_hash(&secret), &keys::prefix(&secret), now);
    let entry =
        audit::entry(&caller, AuditAction::KeyCreated, &m.id, json!({ "key_id": key.id }), now);
    state.store.add_api_key(&m.id, &key, &entry).await?;
    let shown = payhook_core::model::ApiKey {
        id: key.id,
        prefix: key.prefix,
        created_at: key.created_at,
        last_used_at: None,
    };
    let mut view = views::api_key(&shown);
    view["key"] = json!(secret);
    Ok(ShownOnce((StatusCode::CREATED, axum::Json(view))))
}

/// The merchant's keys: id, prefix, when made and the hour last used — never the key.
#[utoipa::path(get, path = "/v1/merchants/{id}/keys", tag = "merchants", operation_id = "list_keys",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Merchant id (mer_…)")),
    responses(
        (status = 200, description = "The merchant's keys, oldest first", body = crate::openapi::ApiKeyList),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not yours", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let m = owned(&state, &caller, &id).await?;
    let held = state.store.api_keys(&m.id).await?;
    let data: Vec<Value> = held.iter().map(views::api_key).collect();
    Ok(axum::Json(json!({ "data": data })))
}

/// Revokes a key at once. The merchant's last key cannot be revoked: create its successor
/// first.
#[utoipa::path(delete, path = "/v1/merchants/{id}/keys/{key_id}", tag = "merchants", operation_id = "revoke_key",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Merchant id (mer_…)"),
           ("key_id" = String, Path, description = "Key id (key_…)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not yours", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such merchant, or no such key of it", body = crate::openapi::ErrorBody),
        (status = 409, description = "The merchant's last key (`last_key`)", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let m = owned(&state, &caller, &id).await?;
    let key: ApiKeyId = key_id.parse().map_err(|_| ApiError::not_found("key"))?;
    let now = state.clock.now();
    let entry =
        audit::entry(&caller, AuditAction::KeyRevoked, &m.id, json!({ "key_id": key }), now);
    state.store.revoke_api_key(&m.id, &key, &entry).await.map_err(|e| match e {
        payhook_store::StoreError::NotFound => ApiError::not_found("key"),
        other => other.into(),
    })?;
    Ok(StatusCode::NO_CONTENT)
}
