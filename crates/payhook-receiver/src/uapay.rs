//! `uapay`: UAPAY callbacks — `{"token": <JWS>}`, HS256 keyed with the UTF-8 bytes of the
//! merchant's secret string, header `{"alg":"HS256","typ":"JWT"}`. Only HS256 is accepted (a
//! token claiming `none` or another algorithm is refused), and `exp` is not required: payhook
//! re-signs each attempt with a fresh `iat` instead.

use crate::ReceiveError;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The payment, as UAPAY's callback describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UapayPayment {
    pub payment_id: String,
    pub invoice_id: String,
    /// Your order id.
    pub external_id: String,
    pub payment_number: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_from_masked: Option<String>,
    #[serde(default)]
    pub card_to_masked: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_from_holder_name: Option<String>,
    /// In minor units.
    pub amount: i64,
    #[serde(default)]
    pub reversal_amount: i64,
    /// `NEW`, `FINISHED`, `PAID` (held), `CANCELED`, `REVERSED`.
    pub status: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub system_type: String,
    /// `PENDING`, `NEEDS_CONFIRMATION`, `FINISHED`, `HOLDED`, `REJECTED`, `CANCELED`,
    /// `REVERSED`, `RETURNED`.
    pub payment_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_path: Option<String>,
    /// A JSON document as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_info: Option<String>,
    pub create_date: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pay_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_date: Option<String>,
    /// Unix seconds of the attempt that signed this token.
    pub iat: i64,
}

#[derive(Deserialize)]
struct Body {
    token: String,
}

/// Verifies the body `{"token": …}` with the merchant's secret and returns its claims.
pub fn verify(secret: &str, body: &[u8]) -> Result<UapayPayment, ReceiveError> {
    let body: Body = serde_json::from_slice(body)
        .map_err(|e| ReceiveError::Malformed(format!("expected {{\"token\": …}}: {e}")))?;
    verify_token(secret, &body.token)
}

/// Verifies one compact JWS and returns its claims.
pub fn verify_token(secret: &str, token: &str) -> Result<UapayPayment, ReceiveError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    let key = DecodingKey::from_secret(secret.as_bytes());
    let data = decode::<Value>(token.trim(), &key, &validation).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidSignature => ReceiveError::BadSignature,
        _ => ReceiveError::BadToken(e.to_string()),
    })?;
    serde_json::from_value(data.claims).map_err(|e| ReceiveError::Malformed(e.to_string()))
}
