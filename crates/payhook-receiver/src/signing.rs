//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>), the one implementation
//! shared by the sender (payhook-core re-exports this module as `payhook_core::signing`) and by
//! the merchant side ([`crate::standard`], [`crate::ecom`], `payhook listen`).
//!
//! `webhook-signature: v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`, where the key is
//! the base64-decoded part of a `whsec_…` secret. During a rotation, several signatures are sent
//! space-separated.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

const PREFIX: &str = "whsec_";

/// A `whsec_…` signing secret. `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret {
    text: String,
    key: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("a signing secret must be \"whsec_\" followed by base64")]
    BadSecret,
    #[error("no valid signature")]
    NoMatch,
}

impl SigningSecret {
    /// Parses `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Self, SigningError> {
        let b64 = text.strip_prefix(PREFIX).ok_or(SigningError::BadSecret)?;
        let key = B64.decode(b64).map_err(|_| SigningError::BadSecret)?;
        if key.is_empty() {
            return Err(SigningError::BadSecret);
        }
        Ok(SigningSecret { text: text.to_owned(), key })
    }

    /// Builds a secret from raw key bytes (the caller supplies the randomness).
    pub fn from_key(key: &[u8]) -> Self {
        SigningSecret { text: format!("{PREFIX}{}", B64.encode(key)), key: key.to_vec() }
    }

    /// The `whsec_…` form, for showing the merchant once and for storage.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The raw HMAC key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key size");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// `v1,<base64 signature>` of one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", B64.encode(tag))
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// The `webhook-signature` header value: one signature per active secret, space-separated.
pub fn signature_header(
    secrets: &[&SigningSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets.iter().map(|s| s.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

/// Checks a `webhook-signature` header: succeeds if any `v1` signature matches (constant-time
/// comparison inside `Mac::verify_slice`). Timestamp tolerance is the caller's business.
pub fn verify(
    secret: &SigningSecret,
    id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
) -> Result<(), SigningError> {
    for candidate in header.split_whitespace() {
        let Some(b64) = candidate.strip_prefix("v1,") else { continue };
        let Ok(tag) = B64.decode(b64) else { continue };
        if secret.mac(id, timestamp, body).verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    Err(SigningError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TS: i64 = 1_649_367_553;
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;

    #[test]
    fn standard_webhooks_test_vector() {
        let secret = SigningSecret::parse(SECRET).expect("valid secret");
        assert_eq!(secret.sign(ID, TS, BODY), "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn verifies_with_any_of_two_signatures_during_rotation() {
        let old = SigningSecret::parse(SECRET).expect("valid secret");
        let new = SigningSecret::from_key(&[7u8; 32]);
        let header = signature_header(&[&new, &old], ID, TS, BODY);
        assert_eq!(header.split(' ').count(), 2);
        assert_eq!(verify(&old, ID, TS, BODY, &header), Ok(()));
        assert_eq!(verify(&new, ID, TS, BODY, &header), Ok(()));
        assert_eq!(verify(&new, ID, TS + 1, BODY, &header), Err(SigningError::NoMatch));
    }

    #[test]
    fn the_official_library_accepts_our_signature() {
        let ours = SigningSecret::from_key(&[42u8; 32]);
        let header = ours.sign(ID, TS, BODY);
        let wh = standardwebhooks::Webhook::new(ours.expose()).expect("library parses whsec_");
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", ID.parse().expect("header"));
        headers.insert("webhook-timestamp", TS.to_string().parse().expect("header"));
        headers.insert("webhook-signature", header.parse().expect("header"));
        // The library checks the timestamp against the wall clock, so ask it to sign instead,
        // and compare with ours on the same inputs.
        let theirs = wh.sign(ID, TS, BODY).expect("library signs");
        assert_eq!(theirs, header);
    }

    #[test]
    fn debug_hides_the_key() {
        let s = SigningSecret::parse(SECRET).expect("valid secret");
        assert!(!format!("{s:?}").contains("C2FV"));
    }

    #[test]
    fn rejects_malformed_secrets() {
        assert!(SigningSecret::parse("C2FVsBQI").is_err());
        assert!(SigningSecret::parse("whsec_***").is_err());
        assert!(SigningSecret::parse("whsec_").is_err());
    }
}
