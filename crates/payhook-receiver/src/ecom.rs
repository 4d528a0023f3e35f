//! `ecom`: Bank Alliance (ALB) ECOM notificationUrl callbacks — the order object, optionally a
//! compact JWE (`ECDH-ES+A256KW`, `A256GCM`) to your P-384 key, announced by
//! `X-Encrypted_Body: true`. payhook signs the body as sent (the JWE text when encrypted) with
//! Standard Webhooks headers; the signature is checked before anything is decrypted.

use crate::standard::Webhook;
use crate::{header, ReceiveError};
use http::HeaderMap;
use josekit::jwe::{self, ECDH_ES_A256KW};
use josekit::jwk::Jwk;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// The header that marks an encrypted body.
pub const ENCRYPTED_HEADER: &str = "x-encrypted_body";

/// ALB's order, as payhook sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EcomOrder {
    /// The `webhook-id` header (delivery id, the same on every retry).
    #[serde(skip)]
    pub webhook_id: String,
    /// Whether the body arrived encrypted.
    #[serde(skip)]
    pub encrypted: bool,
    pub ecom_order_id: String,
    pub coin_amount: i64,
    pub merchant_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpp_order_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_url: Option<String>,
    #[serde(default)]
    pub notification_encryption: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpp_pay_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpp_direct_type: Option<String>,
    /// Your order id.
    pub merchant_request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_date: Option<String>,
    #[serde(default)]
    pub payment_methods: Vec<String>,
    /// `PENDING`, `REQUIRED_3DS`, `SUCCESS`, `FAIL`, `REVERSED`, `REFUNDED`.
    pub order_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_order_date: Option<String>,
    /// The transaction (seed 004 and the SDKs name it `operation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<EcomTransaction>,
    /// The same, under seed 002's name (merchant setting `ecom_operations_field`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations: Option<EcomTransaction>,
}

impl EcomOrder {
    /// The transaction, whichever name it came under.
    pub fn transaction(&self) -> Option<&EcomTransaction> {
        self.operation.as_ref().or(self.operations.as_ref())
    }
}

/// ALB's transaction object: the fields payhook always fills, and whatever else ALB's
/// processing passed through (`rrn`, `approvalCode`, …) in `other`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EcomTransaction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coin_amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_request_id: Option<String>,
    /// Numeric ISO 4217 (`"980"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_currency: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The merchant's private EC P-384 key. `Debug` does not print it.
#[derive(Clone)]
pub struct PrivateKey(Jwk);

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl PrivateKey {
    /// An EC P-384 JWK with its private part `d`.
    pub fn from_jwk(jwk: &Value) -> Result<Self, ReceiveError> {
        let bad = |why: &str| ReceiveError::Config(format!("the private key {why}"));
        let map = jwk.as_object().ok_or_else(|| bad("must be a JWK object"))?;
        if map.get("kty").and_then(Value::as_str) != Some("EC")
            || map.get("crv").and_then(Value::as_str) != Some("P-384")
        {
            return Err(bad("must be an EC P-384 JWK"));
        }
        if !map.contains_key("d") {
            return Err(bad("has no \"d\": give the private JWK, not the public one"));
        }
        let key = Jwk::from_map(map.clone()).map_err(|e| bad(&format!("is not a JWK: {e}")))?;
        ECDH_ES_A256KW.decrypter_from_jwk(&key).map_err(|e| bad(&format!("is unusable: {e}")))?;
        Ok(PrivateKey(key))
    }

    /// Decrypts a compact JWE to its plaintext.
    pub fn decrypt(&self, compact: &str) -> Result<Vec<u8>, ReceiveError> {
        let decrypter = ECDH_ES_A256KW
            .decrypter_from_jwk(&self.0)
            .map_err(|e| ReceiveError::Decrypt(e.to_string()))?;
        let (plain, header) = jwe::deserialize_compact(compact.trim(), &decrypter)
            .map_err(|e| ReceiveError::Decrypt(e.to_string()))?;
        if header.content_encryption() != Some("A256GCM") {
            return Err(ReceiveError::Decrypt("enc is not A256GCM".into()));
        }
        Ok(plain)
    }
}

/// Whether the request says its body is a JWE.
pub fn is_encrypted(headers: &HeaderMap) -> bool {
    header(headers, ENCRYPTED_HEADER).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Verifies the signature over the body as sent, decrypts it when `X-Encrypted_Body: true`,
/// and parses the order, at `now` (unix seconds).
pub fn receive_at(
    webhook: &Webhook,
    key: Option<&PrivateKey>,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<EcomOrder, ReceiveError> {
    let webhook_id = webhook.check_at(headers, body, now)?;
    let encrypted = is_encrypted(headers);
    let plain = if encrypted {
        let key = key.ok_or(ReceiveError::NoKey)?;
        let text = std::str::from_utf8(body)
            .map_err(|_| ReceiveError::Malformed("the JWE is not text".into()))?;
        key.decrypt(text)?
    } else {
        body.to_vec()
    };
    let mut order: EcomOrder =
        serde_json::from_slice(&plain).map_err(|e| ReceiveError::Malformed(e.to_string()))?;
    order.webhook_id = webhook_id;
    order.encrypted = encrypted;
    Ok(order)
}
