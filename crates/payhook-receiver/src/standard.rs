//! `standard`: Standard Webhooks 1.0 callbacks — check `webhook-id`, `webhook-timestamp` and
//! `webhook-signature` over the body as sent, then parse `operation.status_changed`.

use crate::signing::{verify, SigningSecret};
use crate::{header, ReceiveError};
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Standard Webhooks' default: a timestamp more than 5 minutes from now is refused.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// `operation.status_changed`: one status change of one operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StandardEvent {
    /// The `webhook-id` header: the delivery id, the same on every retry. Drop duplicates by it.
    #[serde(skip)]
    pub webhook_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The time of the status change (RFC 3339), the same on every retry.
    pub timestamp: String,
    pub data: OperationSnapshot,
}

/// The operation as of this change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationSnapshot {
    /// payhook's operation id (`op_…`).
    pub id: String,
    /// payhook's numeric operation number.
    pub number: i64,
    pub merchant_id: String,
    /// Your order id.
    pub external_id: String,
    /// In minor units.
    pub amount: i64,
    pub currency: String,
    pub kind: String,
    pub status: String,
    pub previous_status: String,
    /// Grows by one with each change: ignore a callback whose `seq` is below one you applied.
    pub seq: i64,
    /// Provider fields (rrn, approvalCode, …) as the payment core gave them.
    #[serde(default)]
    pub data: Map<String, Value>,
}

/// A Standard Webhooks verifier for one merchant secret.
/// One of payhook's operator alerts (`--ops-webhook`): `merchant.endpoint_failing`,
/// `merchant.endpoint_recovered`, `merchant.endpoint_disabled`, `merchant.paused`,
/// `merchant.resumed`, signed with the ops webhook's secret as callbacks are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpsAlert {
    /// The `webhook-id` header (`evt_…`), the same on every retry. Drop duplicates by it.
    #[serde(skip)]
    pub webhook_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the alert was raised (RFC 3339).
    pub timestamp: String,
    /// `merchant_id`, and for endpoint alerts `url`, `consecutive_failures`, `failing_since`,
    /// `last_success_at`, `last_failure_at`.
    pub data: Map<String, Value>,
}

/// The type prefix of operator alerts.
pub const ALERT_PREFIX: &str = "merchant.";

#[derive(Debug, Clone)]
pub struct Webhook {
    secret: SigningSecret,
    tolerance_secs: i64,
}

/// The three Standard Webhooks headers, read and checked for form.
struct Signed<'a> {
    id: &'a str,
    timestamp: i64,
    signature: &'a str,
}

impl<'a> Signed<'a> {
    fn read(headers: &'a HeaderMap) -> Result<Self, ReceiveError> {
        let get = |name| header(headers, name).ok_or(ReceiveError::MissingHeader(name));
        let timestamp =
            get("webhook-timestamp")?.trim().parse().map_err(|_| ReceiveError::BadTimestamp)?;
        Ok(Signed { id: get("webhook-id")?, timestamp, signature: get("webhook-signature")? })
    }
}

impl Webhook {
    /// A verifier for the merchant's `whsec_…` secret.
    pub fn new(secret: &str) -> Result<Self, ReceiveError> {
        let secret =
            SigningSecret::parse(secret).map_err(|e| ReceiveError::Config(e.to_string()))?;
        Ok(Webhook { secret, tolerance_secs: DEFAULT_TOLERANCE_SECS })
    }

    /// Accepts timestamps this many seconds from now.
    pub fn with_tolerance(mut self, seconds: i64) -> Self {
        self.tolerance_secs = seconds;
        self
    }

    /// Checks the signature headers over `body` at `now` (unix seconds) and returns the
    /// `webhook-id`. Used by [`crate::ecom`] too, whose signature covers the body as sent.
    pub fn check_at(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<String, ReceiveError> {
        let signed = Signed::read(headers)?;
        let skew = now - signed.timestamp;
        if skew.abs() > self.tolerance_secs {
            return Err(ReceiveError::StaleTimestamp(skew));
        }
        verify(&self.secret, signed.id, signed.timestamp, body, signed.signature)
            .map_err(|_| ReceiveError::BadSignature)?;
        Ok(signed.id.to_owned())
    }

    /// Verifies a standard callback at `now` (unix seconds) and parses it.
    pub fn verify_at(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<StandardEvent, ReceiveError> {
        let webhook_id = self.check_at(headers, body, now)?;
        let mut event: StandardEvent =
            serde_json::from_slice(body).map_err(|e| ReceiveError::Malformed(e.to_string()))?;
        event.webhook_id = webhook_id;
        Ok(event)
    }

    /// Verifies one of payhook's operator alerts at `now` (unix seconds) and parses it.
    pub fn verify_alert_at(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<OpsAlert, ReceiveError> {
        let webhook_id = self.check_at(headers, body, now)?;
        let mut alert: OpsAlert =
            serde_json::from_slice(body).map_err(|e| ReceiveError::Malformed(e.to_string()))?;
        if !alert.event_type.starts_with(ALERT_PREFIX) {
            return Err(ReceiveError::Malformed(format!("not an alert: {}", alert.event_type)));
        }
        alert.webhook_id = webhook_id;
        Ok(alert)
    }

    /// Whether a verified body is an operator alert rather than an operation's callback.
    pub fn is_alert(body: &[u8]) -> bool {
        #[derive(Deserialize)]
        struct Kind {
            #[serde(rename = "type")]
            event_type: String,
        }
        serde_json::from_slice::<Kind>(body).is_ok_and(|k| k.event_type.starts_with(ALERT_PREFIX))
    }

    /// [`Webhook::verify_at`] against the wall clock.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<StandardEvent, ReceiveError> {
        self.verify_at(headers, body, crate::unix_now())
    }
}
