//! `/v1/merchants`: create, list, read, patch, rotate-secret (admin only).

use crate::auth::{token_hash, Caller};
use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::validate;
use crate::views::ShownOnce;
use crate::{views, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use payhook_core::dialect::Dialect;
use payhook_core::ids::MerchantId;
use payhook_core::lifecycle::health::HealthState;
use payhook_core::lifecycle::{self, keys};
use payhook_core::model::Merchant;
use payhook_core::retry::RetryPolicy;
use payhook_core::signing::SigningSecret;
use payhook_core::target::TargetPolicy;
use payhook_store::{MerchantQuery, NewApiKey};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// How long the old secret keeps signing after a rotation.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// `POST /v1/merchants`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMerchant {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
    /// Default `standard`.
    #[serde(default)]
    #[schema(value_type = Option<crate::openapi::DialectName>)]
    dialect: Option<String>,
    #[serde(default)]
    #[schema(max_length = 2048)]
    callback_url: Option<String>,
    /// Approved callback URL prefixes (required for `uapay`).
    #[serde(default)]
    allowed_callback_urls: Vec<String>,
    /// `{"schedule":["5s","5m"]}` or `{"interval":"500ms","max_attempts":10}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    retry: Option<Value>,
    /// A public EC P-384 JWK, for ECOM's encrypted callbacks.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    encryption_key: Option<Value>,
    /// Dialect switches, e.g. `{"ecom_operations_field":"operations"}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    settings: Map<String, Value>,
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::thread_rng().fill_bytes(&mut b);
    b
}

fn new_secret() -> SigningSecret {
    SigningSecret::from_key(&random_bytes::<32>())
}

pub(crate) fn new_api_key() -> String {
    format!("pk_{}", URL_SAFE_NO_PAD.encode(random_bytes::<24>()))
}

pub(crate) fn parse_dialect(field: &str, s: &str) -> Result<Dialect, ApiError> {
    s.parse().map_err(|e: payhook_core::dialect::UnknownDialect| {
        ApiError::invalid("unknown_dialect", field, e.to_string())
    })
}

pub(crate) fn parse_retry(field: &str, v: &Value) -> Result<RetryPolicy, ApiError> {
    RetryPolicy::from_json(v)
        .map_err(|e| ApiError::invalid("invalid_retry_policy", field, e.to_string()))
}

/// A merchant's fields, then its dialect's rules, after create and after every patch.
fn check_merchant(m: &Merchant, targets: &TargetPolicy) -> Result<(), ApiError> {
    validate::text("name", &m.name, validate::MAX_NAME)?;
    validate::opt_target_url(targets, "callback_url", &m.callback_url)?;
    for prefix in &m.allowed_callback_urls {
        validate::url("allowed_callback_urls", prefix)?;
        validate::target(targets, "allowed_callback_urls", prefix)?;
    }
    Ok(lifecycle::check_merchant(m)?)
}

#[utoipa::path(post, path = "/v1/merchants", tag = "merchants", security(("bearer" = [])),
    request_body = CreateMerchant,
    responses(
        (status = 201, description = "Created; secrets shown once", body = crate::openapi::MerchantCreated),
        (status = 400, description = "Malformed body or query", body = crate::openapi::ErrorBody),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not yours", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "Semantically invalid", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateMerchant>,
) -> Result<ShownOnce<(StatusCode, axum::Json<Value>)>, ApiError> {
    caller.require_admin()?;
    let now = state.clock.now();
    let dialect = match &body.dialect {
        Some(d) => parse_dialect("dialect", d)?,
        None => Dialect::Standard,
    };
    let retry = body.retry.as_ref().map(|v| parse_retry("retry", v)).transpose()?;
    let merchant = Merchant {
        id: payhook_store::mint_id(MerchantId::PREFIX).parse().map_err(ApiError::internal)?,
        name: body.name,
        dialect,
        callback_url: body.callback_url,
        allowed_callback_urls: body.allowed_callback_urls,
        retry,
        encryption_key: body.encryption_key,
        settings: body.settings,
        signing_secret: new_secret(),
        previous_secret: None,
        state: Default::default(),
        created_at: now,
        updated_at: now,
    };
    check_merchant(&merchant, &state.targets)?;
    let api_key = new_api_key();
    let key = NewApiKey::minted(&token_hash(&api_key), &keys::prefix(&api_key), now);
    state.store.create_merchant(&merchant, &key).await?;
    let mut view = views::merchant(&merchant);
    view["api_key"] = json!(api_key);
    view["api_key_id"] = json!(key.id);
    view["signing_secret"] = json!(merchant.signing_secret.expose());
    Ok(ShownOnce((StatusCode::CREATED, axum::Json(view))))
}

pub(crate) async fn load(state: &AppState, id: &str) -> Result<Merchant, ApiError> {
    let id: MerchantId = id.parse().map_err(|_| ApiError::not_found("merchant"))?;
    state.store.get_merchant(&id).await?.ok_or_else(|| ApiError::not_found("merchant"))
}

#[utoipa::path(get, path = "/v1/merchants/{id}", tag = "merchants", operation_id = "read_merchant", security(("bearer" = [])),
    params(("id" = String, Path, description = "Merchant id (mer_…)")),
    responses(
        (status = 200, description = "The merchant with its destinations' health, without secrets", body = crate::openapi::MerchantWithHealth),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not yours", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody)))]
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    caller.require_admin()?;
    let m = load(&state, &id).await?;
    Ok(axum::Json(crate::merchant_health::merchant(&state, &m).await?))
}

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// A page's `next_after` (a merchant id); leave out for the first page.
    #[param(required = false)]
    after: Option<String>,
    /// 1..=1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Merchants whose name contains this, ignoring the case of ASCII letters.
    #[param(required = false, max_length = 200)]
    name: Option<String>,
    /// Merchants of this dialect.
    #[param(required = false, value_type = crate::openapi::DialectName)]
    dialect: Option<String>,
    /// Merchants in this health state (see the merchant's `health`).
    #[param(required = false, value_type = crate::openapi::HealthStateName)]
    health: Option<String>,
}

/// The merchants, in creation order, by cursor and filters.
#[utoipa::path(get, path = "/v1/merchants", tag = "merchants", security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of merchants, without secrets", body = crate::openapi::MerchantPage),
        (status = 400, description = "Malformed query", body = crate::openapi::ErrorBody),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Admin only", body = crate::openapi::ErrorBody),
        (status = 422, description = "after is not a merchant id, limit outside 1..=1000, name too long, an unknown dialect or health state", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    caller.require_admin()?;
    let limit = validate::page(0, q.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    if let Some(after) = &q.after {
        after.parse::<MerchantId>().map_err(|_| {
            ApiError::invalid("invalid_cursor", "after", "after is a merchant id (mer_…)")
        })?;
    }
    if q.name.as_ref().is_some_and(|n| n.chars().count() > 200) {
        return Err(ApiError::invalid("field_too_long", "name", "name is at most 200 characters"));
    }
    let dialect = q.dialect.as_deref().map(|d| parse_dialect("dialect", d)).transpose()?;
    let health = q.health.as_deref().map(parse_health).transpose()?;
    let query = MerchantQuery { after: q.after.clone(), name: q.name, dialect, limit };
    let data = crate::merchant_health::page(&state, query, health).await?;
    let next_after = data.last().map(|m| m["id"].clone()).unwrap_or(json!(q.after));
    Ok(axum::Json(json!({ "data": data, "next_after": next_after })))
}

fn parse_health(s: &str) -> Result<HealthState, ApiError> {
    HealthState::parse(s).ok_or_else(|| {
        ApiError::invalid(
            "invalid_field",
            "health",
            "health is one of healthy, failing, disabled, unknown",
        )
    })
}

fn opt_string(field: &str, v: &Value) -> Result<Option<String>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(ApiError::malformed(format!("{field} must be a string or null")).on(field)),
    }
}

/// Applies one key of a merge-patch body.
fn apply_patch(m: &mut Merchant, key: &str, v: &Value) -> Result<bool, ApiError> {
    let mut reenable = false;
    match key {
        "name" => {
            m.name = opt_string(key, v)?.ok_or_else(|| ApiError::malformed("name is required"))?
        }
        "dialect" => {
            let d =
                opt_string(key, v)?.ok_or_else(|| ApiError::malformed("dialect is required"))?;
            m.dialect = parse_dialect(key, &d)?;
        }
        "callback_url" => {
            m.callback_url = opt_string(key, v)?;
            reenable = true;
        }
        "allowed_callback_urls" if v.is_null() => m.allowed_callback_urls = Vec::new(),
        "allowed_callback_urls" => {
            m.allowed_callback_urls = serde_json::from_value(v.clone())
                .map_err(|_| ApiError::malformed("allowed_callback_urls must be a list of URLs"))?
        }
        "retry" => m.retry = (!v.is_null()).then(|| parse_retry(key, v)).transpose()?,
        "encryption_key" => m.encryption_key = (!v.is_null()).then(|| v.clone()),
        "settings" if v.is_null() => m.settings = Map::new(),
        "settings" => {
            m.settings = serde_json::from_value(v.clone())
                .map_err(|_| ApiError::malformed("settings must be an object"))?
        }
        "reenable_destinations" => reenable = v.as_bool() == Some(true),
        other => {
            return Err(ApiError::malformed(format!("unknown field {other:?}")).on(other));
        }
    }
    Ok(reenable)
}

/// Merge-patch: present keys replace, `null` clears. Changing `callback_url` (or sending
/// `"reenable_destinations": true`) re-enables destinations disabled by a 410.
#[utoipa::path(patch, path = "/v1/merchants/{id}", tag = "merchants", security(("bearer" = [])),
    params(("id" = String, Path, description = "Merchant id (mer_…)")),
    request_body = crate::openapi::MerchantPatch,
    responses(
        (status = 200, description = "The changed merchant", body = crate::openapi::MerchantView),
        (status = 400, description = "Malformed body or query", body = crate::openapi::ErrorBody),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not yours", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "Semantically invalid", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody)))]
pub async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<Map<String, Value>>,
) -> Result<axum::Json<Value>, ApiError> {
    caller.require_admin()?;
    let mut m = load(&state, &id).await?;
    let mut reenable = false;
    for (k, v) in &body {
        reenable |= apply_patch(&mut m, k, v)?;
    }
    check_merchant(&m, &state.targets)?;
    m.updated_at = state.clock.now();
    state.store.update_merchant(&m, reenable).await?;
    Ok(axum::Json(views::merchant(&m)))
}

/// A new secret; the old one keeps signing beside it for 24 hours.
#[utoipa::path(post, path = "/v1/merchants/{id}/rotate-secret", tag = "merchants",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Merchant id (mer_…)")),
    responses(
        (status = 200, description = "The new secret, shown once; the old one signs beside it for 24 h", body = crate::openapi::RotatedSecret),
        (status = 401, description = "No or bad credentials", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not yours", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 429, description = "Rate limited (Retry-After)", body = crate::openapi::ErrorBody)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<ShownOnce<axum::Json<Value>>, ApiError> {
    caller.require_admin()?;
    let mut m = load(&state, &id).await?;
    let now = state.clock.now();
    let old = std::mem::replace(&mut m.signing_secret, new_secret());
    m.previous_secret = Some((old, now.plus(ROTATION_OVERLAP)));
    m.updated_at = now;
    state.store.update_merchant(&m, false).await?;
    Ok(ShownOnce(axum::Json(json!({
        "id": m.id,
        "signing_secret": m.signing_secret.expose(),
        "previous_secret_expires_at": now.plus(ROTATION_OVERLAP).rfc3339_millis(),
    }))))
}
