//! The dialects' rules for what a merchant and an operation must configure before payhook
//! accepts them. The API checks the shape of each field first; these rules check that the
//! whole can be delivered in its dialect.

use crate::dialect::{ecom, ws2mpi, Dialect};
use crate::model::{CallbackSettings, Merchant};
use serde_json::{Map, Value};

/// A rule a registration breaks: the API answers 422 with this code, on this field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RuleViolation {
    pub code: &'static str,
    pub field: &'static str,
    pub message: String,
}

fn violation(code: &'static str, field: &'static str, message: impl Into<String>) -> RuleViolation {
    RuleViolation { code, field, message: message.into() }
}

/// Merchant settings payhook understands (anything else is refused).
pub const KNOWN_SETTINGS: &[&str] = &["ecom_operations_field"];

/// The rules a merchant satisfies after it is created and after every change.
pub fn check_merchant(m: &Merchant) -> Result<(), RuleViolation> {
    if m.dialect == Dialect::Uapay && m.allowed_callback_urls.is_empty() {
        return Err(violation(
            "allowed_callback_urls_required",
            "allowed_callback_urls",
            "uapay merchants deliver only to approved URLs: list them in allowed_callback_urls",
        ));
    }
    if let Some(url) = &m.callback_url {
        if !m.allows_url(url) {
            return Err(not_allowed("callback_url"));
        }
    }
    if let Some(key) = &m.encryption_key {
        ecom::check_public_key(key)
            .map_err(|e| violation("invalid_encryption_key", "encryption_key", e.to_string()))?;
    }
    check_settings(&m.settings)
}

fn check_settings(settings: &Map<String, Value>) -> Result<(), RuleViolation> {
    for (k, v) in settings {
        if !KNOWN_SETTINGS.contains(&k.as_str()) {
            return Err(violation("unknown_setting", "settings", format!("unknown setting {k:?}")));
        }
        if k == "ecom_operations_field" && !matches!(v.as_str(), Some("operation" | "operations")) {
            return Err(violation(
                "invalid_setting",
                "settings",
                "ecom_operations_field is \"operation\" or \"operations\"",
            ));
        }
    }
    Ok(())
}

/// The refusal of a URL that is on none of the merchant's approved prefixes.
pub fn not_allowed(field: &'static str) -> RuleViolation {
    violation(
        "callback_url_not_allowed",
        field,
        format!("{field} matches none of the merchant's allowed_callback_urls"),
    )
}

/// The rules an operation of merchant `m` satisfies in `dialect` (its own or the merchant's)
/// with callback settings `cb` and the merchant's order id `external_id`.
pub fn check_operation(
    m: &Merchant,
    dialect: Dialect,
    cb: &CallbackSettings,
    external_id: &str,
) -> Result<(), RuleViolation> {
    check_order_number(dialect, external_id)?;
    check_destinations(m, dialect, cb)?;
    if cb.encrypt && m.encryption_key.is_none() {
        return Err(violation(
            "encryption_key_missing",
            "encrypt",
            "the merchant has no encryption_key to encrypt callbacks with",
        ));
    }
    Ok(())
}

/// WS2MPI sends `external_id` as its `orderNumber`, ANS 1..32: a longer one is refused up front
/// rather than sent truncated or rejected by the merchant.
fn check_order_number(dialect: Dialect, external_id: &str) -> Result<(), RuleViolation> {
    let max = ws2mpi::MAX_ORDER_NUMBER;
    if dialect == Dialect::Ws2mpi && external_id.chars().count() > max {
        return Err(violation(
            "field_too_long",
            "external_id",
            format!(
                "the ws2mpi dialect sends external_id as orderNumber, at most {max} characters"
            ),
        ));
    }
    Ok(())
}

/// The destinations this dialect needs exist and are on the merchant's allow-list.
fn check_destinations(
    m: &Merchant,
    dialect: Dialect,
    cb: &CallbackSettings,
) -> Result<(), RuleViolation> {
    if dialect == Dialect::Uapay && m.allowed_callback_urls.is_empty() {
        return Err(violation(
            "callback_url_not_allowed",
            "callback_url",
            "uapay delivers only to approved URLs; the merchant has none",
        ));
    }
    let callback = cb.callback_url.as_ref().or(m.callback_url.as_ref());
    let required: Vec<(&'static str, Option<&String>)> = if dialect == Dialect::Xpay {
        // XPAY falls back to the callback URL when a success or fail URL is not given.
        vec![
            ("success_url", cb.success_url.as_ref().or(callback)),
            ("fail_url", cb.fail_url.as_ref().or(callback)),
        ]
    } else {
        vec![("callback_url", callback)]
    };
    for (field, url) in required {
        let url = url.ok_or_else(|| {
            violation(
                "callback_url_required",
                field,
                format!("the {dialect} dialect needs {field}"),
            )
        })?;
        if !m.allows_url(url) {
            return Err(not_allowed(field));
        }
    }
    Ok(())
}
