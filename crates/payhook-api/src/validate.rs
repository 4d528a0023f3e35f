//! Input rules, applied once at the edge. Every rule answers with a machine-readable code
//! (`field_too_long`, `invalid_field`, `invalid_url`, `invalid_amount`, `invalid_currency`,
//! `invalid_data`) and the field it is about; nothing is stored when one fails.

use crate::error::ApiError;
use iso_currency::Currency;
use payhook_core::target::TargetPolicy;
use serde::Deserialize;
use serde_json::{Map, Value};

pub const MAX_NAME: usize = 200;
/// A merchant's order id, in any dialect. Dialects with a tighter field add their own limit at
/// registration (ws2mpi: `orderNumber` is ANS 1..32).
pub const MAX_EXTERNAL_ID: usize = 64;
pub const MAX_URL: usize = 2048;
pub const MAX_KIND: usize = 64;
pub const MAX_EVENT_KEY: usize = 128;
/// `data`: at most this many entries in all (keys of every object and items of every array).
pub const MAX_DATA_ENTRIES: usize = 256;
/// `data`: object keys, at any depth.
pub const MAX_DATA_KEY: usize = 64;
/// `data`: string values, at any depth.
pub const MAX_DATA_STRING: usize = 2048;

/// A non-empty string of at most `max` characters, without control characters (they would
/// forge lines in logs and, in URLs, are silently dropped by URL parsers).
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
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "invalid_field",
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(())
}

/// Provider fields passed through `data`: bounded in entries, key and string lengths (the
/// body limit and the JSON depth limit bound the rest).
pub fn data(field: &str, map: &Map<String, Value>) -> Result<(), ApiError> {
    let mut entries = 0;
    data_object(field, map, &mut entries)
}

fn data_error(field: &str, message: String) -> ApiError {
    ApiError::invalid("invalid_data", field, message)
}

fn data_object(field: &str, map: &Map<String, Value>, entries: &mut usize) -> Result<(), ApiError> {
    for (key, value) in map {
        if key.chars().count() > MAX_DATA_KEY || key.chars().any(char::is_control) {
            return Err(data_error(
                field,
                format!(
                    "{field} keys are 1..={MAX_DATA_KEY} characters without control characters"
                ),
            ));
        }
        data_value(field, value, entries)?;
    }
    Ok(())
}

fn data_value(field: &str, value: &Value, entries: &mut usize) -> Result<(), ApiError> {
    *entries += 1;
    if *entries > MAX_DATA_ENTRIES {
        return Err(data_error(field, format!("{field} holds at most {MAX_DATA_ENTRIES} entries")));
    }
    match value {
        Value::String(s) if s.chars().count() > MAX_DATA_STRING => Err(data_error(
            field,
            format!("{field} strings are limited to {MAX_DATA_STRING} characters"),
        )),
        Value::Object(map) => data_object(field, map, entries),
        Value::Array(items) => items.iter().try_for_each(|v| data_value(field, v, entries)),
        _ => Ok(()),
    }
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
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // Never echoed back: the message names the field, not the URL.
        return Err(ApiError::invalid(
            "invalid_url",
            field,
            format!("{field} must not carry a user name or password"),
        ));
    }
    Ok(())
}

/// A URL payhook would call (callback, status source, allowed prefix), checked against the
/// operator's target policy on its literal host: 422 `blocked_target` when no attempt could
/// ever reach it. Call after [`url`].
pub fn target(policy: &TargetPolicy, field: &str, value: &str) -> Result<(), ApiError> {
    let Ok(parsed) = url::Url::parse(value) else { return Ok(()) };
    match policy.url_refusal(&parsed) {
        Some(why) => Err(ApiError::invalid("blocked_target", field, format!("{field}: {why}"))),
        None => Ok(()),
    }
}

/// [`url`], then [`target`], of an optional field.
pub fn opt_target_url(
    policy: &TargetPolicy,
    field: &str,
    value: &Option<String>,
) -> Result<(), ApiError> {
    let Some(v) = value.as_deref() else { return Ok(()) };
    url(field, v)?;
    target(policy, field, v)
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

/// A current ISO 4217 code, alphabetic (`UAH`) or numeric (`980`), that names money: `XXX`
/// (no currency) and `XTS` (testing) are refused.
pub fn currency(value: &str) -> Result<(), ApiError> {
    let found = if value.len() == 3 && value.bytes().all(|b| b.is_ascii_digit()) {
        value.parse::<u16>().ok().and_then(Currency::from_numeric)
    } else {
        Currency::from_code(value)
    };
    let ok = found.is_some_and(|c| !matches!(c, Currency::XXX | Currency::XTS));
    if !ok {
        return Err(ApiError::invalid(
            "invalid_currency",
            "currency",
            "currency must be an ISO 4217 code such as \"UAH\" or \"980\"",
        ));
    }
    Ok(())
}

/// A page of a list by cursor: `after` at least 0 (422 `invalid_cursor`), `limit` 1..=`max`
/// (422 `invalid_limit`), `default` when left out; returns the limit.
pub fn page(after: i64, limit: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    if after < 0 {
        return Err(ApiError::invalid("invalid_cursor", "after", "after is a position, 0 or more"));
    }
    let limit = limit.unwrap_or(default);
    if limit == 0 || limit > max {
        return Err(ApiError::invalid("invalid_limit", "limit", format!("limit is 1..={max}")));
    }
    Ok(limit)
}

/// An integer field that also takes a JSON number with no fractional part (`130.0`): JSON
/// Schema's `integer` is a value, not a spelling, and clients that hold numbers as floats
/// write it so.
pub fn integral<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    use serde::de::Error;
    let n = serde_json::Number::deserialize(d)?;
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(D::Error::custom(format!("{n} is not an integer"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(url("u", "https://m.example/cb?x=1").is_ok());
        assert!(url("u", "http://127.0.0.1:8080/").is_ok());
        for bad in [
            "",
            "ftp://x.example/",
            "/relative",
            "https://",
            "not a url",
            "https://shop.exa\nmple/cb",
            "https://shop.example/\tcb",
        ] {
            assert!(url("u", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn currencies_and_amounts() {
        for good in ["UAH", "980", "EUR", "978", "USD", "840", "JPY", "392"] {
            assert!(currency(good).is_ok(), "{good}");
        }
        for bad in ["uah", "UA", "98A", "EURO", "ABC", "QQQ", "000", "123", "XXX", "999", "XTS"] {
            assert!(currency(bad).is_err(), "{bad}");
        }
        assert!(amount(1).is_ok());
        assert!(amount(0).is_err());
        assert!(amount(-5).is_err());
    }

    #[test]
    fn text_refuses_control_characters() {
        assert!(text("kind", "purchase", 64).is_ok());
        assert!(text("kind", "покупка", 64).is_ok());
        for bad in ["a\nb", "a\rb", "\u{0}", "x\u{1b}[31m"] {
            let e = text("kind", bad, 64).expect_err(bad);
            assert_eq!(e.code, "invalid_field");
        }
    }

    #[test]
    fn data_is_bounded() {
        let ok: Map<String, Value> =
            serde_json::from_str(r#"{"rrn":"123","operation":{"type":"PURCHASE"},"n":[1,2]}"#)
                .expect("json");
        assert!(data("data", &ok).is_ok());
        let long_key: Map<String, Value> = [("k".repeat(65), Value::Null)].into_iter().collect();
        let long_string: Map<String, Value> =
            [("k".into(), Value::String("v".repeat(2049)))].into_iter().collect();
        let nested_long: Map<String, Value> =
            [("k".into(), serde_json::json!({"deep": ["x".repeat(2049)]}))].into_iter().collect();
        let many: Map<String, Value> = (0..300).map(|i| (format!("k{i}"), Value::Null)).collect();
        for bad in [long_key, long_string, nested_long, many] {
            assert_eq!(data("data", &bad).expect_err("refused").code, "invalid_data");
        }
    }
}
