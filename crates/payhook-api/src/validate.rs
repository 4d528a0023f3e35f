//! Input rules, applied once at the edge.

use crate::error::ApiError;

pub const MAX_NAME: usize = 200;
/// A merchant's order id, in any dialect. Dialects with a tighter field add their own limit at
/// registration (ws2mpi: `orderNumber` is ANS 1..32).
pub const MAX_EXTERNAL_ID: usize = 64;
pub const MAX_URL: usize = 2048;
pub const MAX_KIND: usize = 64;
pub const MAX_EVENT_KEY: usize = 128;

/// A non-empty string of at most `max` characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::invalid(
            "invalid_field",
            field,
            format!("{field} must not be empty"),
        ));
    }
    if value.chars().count() > max {
        return Err(ApiError::invalid(
            "field_too_long",
            field,
            format!("{field} is limited to {max} characters"),
        ));
    }
    Ok(())
}

/// An absolute http(s) URL.
pub fn url(field: &str, value: &str) -> Result<(), ApiError> {
    text(field, value, MAX_URL)?;
    let parsed = url::Url::parse(value)
        .map_err(|e| ApiError::invalid("invalid_url", field, format!("{field}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ApiError::invalid(
            "invalid_url",
            field,
            format!("{field} must be an absolute http or https URL"),
        ));
    }
    Ok(())
}

pub fn opt_url(field: &str, value: &Option<String>) -> Result<(), ApiError> {
    value.as_deref().map_or(Ok(()), |v| url(field, v))
}

/// Amounts are positive integers in minor units.
pub fn amount(value: i64) -> Result<(), ApiError> {
    if value <= 0 {
        return Err(ApiError::invalid(
            "invalid_amount",
            "amount",
            "amount must be a positive integer in minor units",
        ));
    }
    Ok(())
}

/// ISO 4217: three capital letters (`UAH`) or three digits (`980`).
pub fn currency(value: &str) -> Result<(), ApiError> {
    let ok = value.len() == 3
        && (value.bytes().all(|b| b.is_ascii_uppercase())
            || value.bytes().all(|b| b.is_ascii_digit()));
    if !ok {
        return Err(ApiError::invalid(
            "invalid_currency",
            "currency",
            "currency must be an ISO 4217 code such as \"UAH\" or \"980\"",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(url("u", "https://m.example/cb?x=1").is_ok());
        assert!(url("u", "http://127.0.0.1:8080/").is_ok());
        for bad in ["", "ftp://x.example/", "/relative", "https://", "not a url"] {
            assert!(url("u", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn currencies_and_amounts() {
        assert!(currency("UAH").is_ok());
        assert!(currency("980").is_ok());
        for bad in ["uah", "UA", "98A", "EURO"] {
            assert!(currency(bad).is_err(), "{bad}");
        }
        assert!(amount(1).is_ok());
        assert!(amount(0).is_err());
        assert!(amount(-5).is_err());
    }
}
