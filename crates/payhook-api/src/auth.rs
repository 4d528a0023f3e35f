//! Who is calling: the admin (payment core, operators) or a merchant (`pk_…` API key).
//!
//! Tokens are never stored: the admin token and API keys are kept as SHA-256 hashes, and the
//! admin hash is compared in constant time. API keys are looked up by their hash.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use payhook_core::ids::MerchantId;
use payhook_core::lifecycle::keys;
use payhook_store::KeyOwner;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Merchant(MerchantId),
}

impl Caller {
    /// Admin only.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Merchant(_) => Err(ApiError::forbidden()),
        }
    }

    /// The admin, or the merchant that owns the resource.
    pub fn require_access(&self, owner: &MerchantId) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Merchant(m) if m == owner => Ok(()),
            Caller::Merchant(_) => Err(ApiError::forbidden()),
        }
    }
}

/// Records a key's use when it is news (`lifecycle::keys::use_is_news`): at most once an hour
/// per key, off the request's path. A failed record is logged and the request goes on.
fn record_use(state: &AppState, owner: &KeyOwner, token: &str) {
    let now = state.clock.now();
    if !keys::use_is_news(owner.last_used_at, &owner.prefix, now) {
        return;
    }
    let (store, key, prefix) = (state.store.clone(), owner.key.clone(), keys::prefix(token));
    tokio::spawn(async move {
        if let Err(e) = store.touch_api_key(&key, keys::use_hour(now), &prefix).await {
            tracing::warn!(key = %key, error = %e, "could not record an API key's use");
        }
    });
}

/// Hex SHA-256 of a token, as stored.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    format!("{digest:x}")
}

/// The token of `Authorization: Bearer <token>` (the scheme name is case-insensitive).
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = authenticate(parts, state).await?;
        state.limits.check(&caller)?;
        Ok(caller)
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
    let hash = token_hash(token);
    if token.starts_with("pk_") {
        let owner = state.store.merchant_by_api_key(&hash).await?;
        let owner = owner.ok_or_else(ApiError::unauthorized)?;
        record_use(state, &owner, token);
        return Ok(Caller::Merchant(owner.merchant));
    }
    if bool::from(hash.as_bytes().ct_eq(state.admin_token_hash.as_bytes())) {
        Ok(Caller::Admin)
    } else {
        Err(ApiError::unauthorized())
    }
}
