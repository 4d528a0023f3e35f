//! `standard`: Standard Webhooks 1.0 (SPEC §2.1), the default dialect.

use super::{Method, Outgoing, RenderError, RenderInput};
use crate::ids::{MerchantId, OperationId};
use crate::model::{Merchant, Operation};
use crate::retry::RetryPolicy;
use crate::signing::signature_header;
use crate::status::Status;
use serde::Serialize;
use std::time::Duration;

pub(super) fn destination(merchant: &Merchant, op: &Operation) -> Option<String> {
    if op.status == crate::status::Status::Created {
        return None; // registration is not news to the merchant
    }
    op.callback.callback_url.clone().or_else(|| merchant.callback_url.clone())
}

/// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h, each ±20%.
pub(super) fn default_policy() -> RetryPolicy {
    let secs = [5, 300, 1800, 7200, 18_000, 36_000, 50_400, 72_000, 86_400];
    RetryPolicy { delays: secs.into_iter().map(Duration::from_secs).collect(), jitter: 0.2 }
}

/// The callback body. Typed and borrowed, so rendering serializes the event once instead of
/// building a `serde_json::Value` first (field order is the wire order).
#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: String,
    data: Snapshot<'a>,
}

/// The operation snapshot of `data`: canonical fields first, then the provider fields.
#[derive(Serialize)]
struct Snapshot<'a> {
    id: &'a OperationId,
    number: i64,
    merchant_id: &'a MerchantId,
    external_id: &'a str,
    amount: i64,
    currency: &'a str,
    kind: &'a str,
    status: Status,
    previous_status: Status,
    seq: i64,
    data: &'a serde_json::Map<String, serde_json::Value>,
}

/// Bytes reserved for a callback body: an operation with a few provider fields fits.
const BODY_CAPACITY: usize = 512;

pub(super) fn render(input: &RenderInput<'_>) -> Result<Outgoing, RenderError> {
    let op = &input.event.operation;
    let body = Body {
        kind: "operation.status_changed",
        timestamp: input.event.created_at.rfc3339_millis(),
        data: Snapshot {
            id: &op.id,
            number: op.number,
            merchant_id: &op.merchant_id,
            external_id: &op.external_id,
            amount: op.amount,
            currency: &op.currency,
            kind: &op.kind,
            status: input.event.status,
            previous_status: input.event.previous_status,
            seq: input.event.seq,
            data: &op.data,
        },
    };
    // Sized for a typical body up front (`to_vec` starts at 128 bytes and regrows twice).
    let mut bytes = Vec::with_capacity(BODY_CAPACITY);
    serde_json::to_writer(&mut bytes, &body).map_err(|e| RenderError::Invalid(e.to_string()))?;
    Ok(Outgoing {
        method: Method::Post,
        url: input.url.to_owned(),
        headers: signed_headers(input, &bytes, "application/json"),
        body: bytes,
    })
}

/// `content-type` plus the three Standard Webhooks headers over `body` as sent. Shared with the
/// dialects that add Standard Webhooks signatures to their own bodies.
pub(crate) fn signed_headers(
    input: &RenderInput<'_>,
    body: &[u8],
    content_type: &str,
) -> Vec<(String, String)> {
    let id = input.delivery_id.as_str();
    let ts = input.now.unix_seconds();
    let secrets = input.merchant.active_secrets(input.now);
    vec![
        ("content-type".into(), content_type.into()),
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), ts.to_string()),
        ("webhook-signature".into(), signature_header(&secrets, id, ts, body)),
    ]
}

#[cfg(test)]
mod tests {
    use crate::dialect::{Dialect, RenderInput};
    use crate::fixtures::{event, merchant, operation, T0};
    use crate::ids::DeliveryId;
    use crate::signing::{verify, SigningSecret};
    use crate::status::Status;
    use crate::Timestamp;

    #[test]
    fn body_and_headers() {
        let m = merchant(Dialect::Standard);
        let ev = event(operation(Status::Success), Status::Pending);
        let id = DeliveryId::from_suffix("abc");
        let now = Timestamp(T0.0 + 5_000);
        let input = RenderInput {
            delivery_id: &id,
            url: "https://m.example/cb",
            event: &ev,
            merchant: &m,
            now,
        };
        let out = Dialect::Standard.render(&input).expect("renders");
        assert_eq!(out.method.as_str(), "POST");
        assert_eq!(out.url, "https://m.example/cb");
        assert_eq!(out.header("content-type"), Some("application/json"));
        assert_eq!(out.header("webhook-id"), Some("dlv_abc"));
        assert_eq!(out.header("webhook-timestamp"), Some(now.unix_seconds().to_string().as_str()));
        let body: serde_json::Value = serde_json::from_slice(&out.body).expect("json body");
        assert_eq!(body["type"], "operation.status_changed");
        assert_eq!(body["timestamp"], "2021-04-12T10:03:10.000Z");
        assert_eq!(body["data"]["status"], "success");
        assert_eq!(body["data"]["previous_status"], "pending");
        assert_eq!(body["data"]["amount"], 100_000);
        let sig = out.header("webhook-signature").expect("signed");
        assert_eq!(
            verify(&m.signing_secret, "dlv_abc", now.unix_seconds(), &out.body, sig),
            Ok(())
        );
        // The wire order: envelope, then the canonical fields, then the provider's `data`.
        let keys = |v: &serde_json::Value| -> Vec<String> {
            v.as_object().expect("object").keys().cloned().collect()
        };
        assert_eq!(keys(&body), ["type", "timestamp", "data"]);
        let canonical = [
            "id",
            "number",
            "merchant_id",
            "external_id",
            "amount",
            "currency",
            "kind",
            "status",
            "previous_status",
            "seq",
            "data",
        ];
        assert_eq!(keys(&body["data"]), canonical);
        assert_eq!(body["data"]["data"], serde_json::Value::Object(ev.operation.data.clone()));
        let text = std::str::from_utf8(&out.body).expect("utf-8");
        assert!(text.starts_with(r#"{"type":"operation.status_changed","timestamp":"#), "{text}");
    }

    #[test]
    fn signs_with_both_secrets_during_rotation_only() {
        let mut m = merchant(Dialect::Standard);
        let old = SigningSecret::from_key(&[9u8; 32]);
        m.previous_secret = Some((old.clone(), Timestamp(T0.0 + 10_000)));
        let ev = event(operation(Status::Pending), Status::Created);
        let id = DeliveryId::from_suffix("abc");
        let render = |now| {
            let input = RenderInput {
                delivery_id: &id,
                url: "https://m.example",
                event: &ev,
                merchant: &m,
                now,
            };
            Dialect::Standard.render(&input).expect("renders")
        };
        let during = render(Timestamp(T0.0 + 9_000));
        let sig = during.header("webhook-signature").expect("signed");
        assert_eq!(sig.split(' ').count(), 2);
        assert_eq!(
            verify(&old, "dlv_abc", Timestamp(T0.0 + 9_000).unix_seconds(), &during.body, sig),
            Ok(())
        );
        let after = render(Timestamp(T0.0 + 11_000));
        assert_eq!(after.header("webhook-signature").expect("signed").split(' ').count(), 1);
    }

    #[test]
    fn default_schedule_is_the_spec_one() {
        let p = Dialect::Standard.default_policy();
        let secs: Vec<u64> = p.delays.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, [5, 300, 1800, 7200, 18_000, 36_000, 50_400, 72_000, 86_400]);
        assert_eq!(p.jitter, 0.2);
    }
}
