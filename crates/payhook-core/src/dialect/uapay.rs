//! `uapay`: UAPAY invoice-payment callbacks (seed 003) — `{"token":"<JWS>"}`, an HS256 JWS of
//! the flat callback object, re-signed with a fresh `iat` on every attempt.

use super::{Method, Outgoing, RenderError, RenderInput};
use crate::model::{Merchant, Operation};
use crate::retry::RetryPolicy;
use crate::status::Status;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// The JWS header exactly as in seed 003. Written by hand because `jsonwebtoken::Header`
/// serializes `typ` before `alg`; receivers that compare the header segment see the seed's.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// UAPAY's `status` and `paymentStatus` for a canonical status (`hold`: a two-phase success,
/// only the amount held); `created` sends nothing.
fn statuses(status: Status, hold: bool) -> Option<(&'static str, &'static str)> {
    Some(match status {
        Status::Created => return None,
        Status::Pending => ("NEW", "PENDING"),
        Status::Requires3ds => ("NEW", "NEEDS_CONFIRMATION"),
        Status::Success if hold => ("PAID", "HOLDED"),
        Status::Success => ("FINISHED", "FINISHED"),
        Status::Failed => ("CANCELED", "REJECTED"),
        Status::Expired => ("CANCELED", "CANCELED"),
        Status::Reversed => ("REVERSED", "REVERSED"),
        Status::Refunded => ("REVERSED", "RETURNED"),
    })
}

/// The operation's callback URL, else the merchant's, for every mapped status.
pub(super) fn destination(merchant: &Merchant, op: &Operation) -> Option<String> {
    statuses(op.status, false)?;
    super::callback_url(merchant, op)
}

/// The seed's guaranteed delivery: five more attempts, 5 s, 5 min, 1 h, 2 h, 24 h apart.
pub(super) fn default_policy() -> RetryPolicy {
    let secs = [5, 300, 3600, 7200, 86_400];
    RetryPolicy::fixed(secs.into_iter().map(Duration::from_secs).collect())
}

pub(super) fn render(input: &RenderInput<'_>) -> Result<Outgoing, RenderError> {
    let claims = claims(input)?;
    let token = sign(&claims, input.merchant.signing_secret.expose())?;
    let body = super::json_bytes(&json!({ "token": token }))?;
    let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    Ok(Outgoing { method: Method::Post, url: input.url.to_owned(), headers, body })
}

/// `header.payload.signature`, HS256 with the UTF-8 bytes of the merchant's secret string as
/// the key (what UAPAY integrations hand their JWT library).
fn sign(claims: &Map<String, Value>, secret: &str) -> Result<String, RenderError> {
    let payload = super::json_bytes(&Value::Object(claims.clone()))?;
    let message = format!("{}.{}", B64URL.encode(HEADER), B64URL.encode(payload));
    let key = EncodingKey::from_secret(secret.as_bytes());
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256)
        .map_err(|e| RenderError::Invalid(format!("uapay signature: {e}")))?;
    Ok(format!("{message}.{signature}"))
}

/// The flat callback object in seed 003's key order. Canonical fields come from the operation
/// and event; UAPAY's own fields from `data`, omitted when absent (`cardToMasked` is `null`
/// instead, as in the seed).
fn claims(input: &RenderInput<'_>) -> Result<Map<String, Value>, RenderError> {
    let op = &input.event.operation;
    let status = input.event.status;
    let hold = status == Status::Success && super::is_two_phase(op);
    let unmapped = || super::unmapped(super::Dialect::Uapay, status);
    let (status_text, payment_status) = statuses(status, hold).ok_or_else(unmapped)?;
    let data = &op.data;
    let mut c = Map::new();
    c.insert("paymentId".into(), text_or(data, "paymentId", op.id.as_str()));
    c.insert("invoiceId".into(), text_or(data, "invoiceId", op.id.as_str()));
    c.insert("externalId".into(), json!(op.external_id));
    c.insert("paymentNumber".into(), json!(op.number));
    super::copy_from_data(&mut c, data, &["cardFromMasked"]);
    c.insert("cardToMasked".into(), data.get("cardToMasked").cloned().unwrap_or(Value::Null));
    super::copy_from_data(&mut c, data, &["cardFromHolderName"]);
    c.insert("amount".into(), json!(op.amount));
    c.insert("reversalAmount".into(), json!(reversal_amount(op, status)));
    c.insert("status".into(), json!(status_text));
    c.insert("type".into(), text_or(data, "type", "PAY"));
    c.insert("systemType".into(), text_or(data, "systemType", "ECOM"));
    c.insert("paymentStatus".into(), json!(payment_status));
    super::copy_from_data(&mut c, data, &["receiptPath"]);
    if let Some(extra) = extra_info(data) {
        c.insert("extraInfo".into(), extra);
    }
    c.insert("createDate".into(), json!(op.created_at.rfc3339_millis()));
    insert_dates(&mut c, input, hold);
    c.insert("iat".into(), json!(input.now.unix_seconds()));
    Ok(c)
}

/// `data[key]` when it is a string, else `default`.
fn text_or(data: &Map<String, Value>, key: &str, default: &str) -> Value {
    match data.get(key) {
        Some(Value::String(s)) => json!(s),
        _ => json!(default),
    }
}

/// `data.reversalAmount` when given; else the whole amount once reversed or refunded; else 0.
fn reversal_amount(op: &Operation, status: Status) -> i64 {
    if let Some(given) = op.data.get("reversalAmount").and_then(Value::as_i64) {
        return given;
    }
    match status {
        Status::Reversed | Status::Refunded => op.amount,
        _ => 0,
    }
}

/// `extraInfo` is a JSON document encoded as a string: a string passes as is, any other JSON
/// value is encoded; `null` or absent omits it.
fn extra_info(data: &Map<String, Value>) -> Option<Value> {
    match data.get("extraInfo")? {
        Value::Null => None,
        Value::String(s) => Some(json!(s)),
        other => Some(json!(other.to_string())),
    }
}

/// `payDate` is this event's time when the payment succeeds, `holdDate` when a two-phase
/// payment is held. On later events (reversal, refund) payhook no longer knows those times, so
/// it passes `data.payDate` / `data.holdDate` when the payment core supplies them.
fn insert_dates(c: &mut Map<String, Value>, input: &RenderInput<'_>, hold: bool) {
    let event_time = json!(input.event.created_at.rfc3339_millis());
    let data = &input.event.operation.data;
    match (input.event.status, hold) {
        (Status::Success, false) => {
            c.insert("payDate".into(), event_time);
        }
        (Status::Success, true) => {
            c.insert("holdDate".into(), event_time);
        }
        _ => super::copy_from_data(c, data, &["payDate", "holdDate"]),
    }
}

#[cfg(test)]
mod tests {
    use crate::dialect::{Dialect, RenderInput, Reply, Verdict};
    use crate::fixtures::{event, merchant, operation, T0};
    use crate::golden::keys;
    use crate::ids::DeliveryId;
    use crate::model::{Merchant, Operation};
    use crate::status::Status;
    use crate::Timestamp;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
    use base64::Engine;
    use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
    use serde_json::{json, Value};

    const SEED_TOKEN: &str = include_str!("../../tests/golden/uapay_seed_003.token");
    const SEED_EXAMPLE: &str = include_str!("../../tests/golden/uapay_seed_003.json");
    /// The seed's payment time: its `payDate`, and its `iat` in whole seconds.
    const PAID_AT: Timestamp = Timestamp(1_618_221_811_874);

    fn segment(token: &str, index: usize) -> Value {
        let part = token.trim().split('.').nth(index).expect("three segments");
        serde_json::from_slice(&B64URL.decode(part).expect("base64url")).expect("JSON segment")
    }

    /// An operation carrying the seed's values; created at the seed's `createDate` (T0).
    fn seed_operation(holder: bool) -> Operation {
        let mut op = operation(Status::Success);
        op.external_id = "0f91bb90-88ee-4f2a-8b75-93bdcb6144ec".into();
        op.number = 249_503;
        op.amount = 100_000;
        let extra = json!({"docId":"0994780402","sprotocol":"ТЕСТ","nprotocol":"2423852","licensePlate":"fineSeries"});
        let receipt = "https://api.stage.uapay.ua/api/acquiring/receipts/v2/61b9a5d5-d429-48fa-b01c-2f8dc75f2023.pdf";
        let data = [
            ("paymentId", json!("61b9a5d5-d429-48fa-b01c-2f8dc75f2023")),
            ("invoiceId", json!("1cfdea43-10f0-40c8-9fe8-55d38f48b9bc")),
            ("cardFromMasked", json!("4111111111")),
            ("receiptPath", json!(receipt)),
            ("extraInfo", extra),
        ];
        op.data.extend(data.into_iter().map(|(k, v)| (k.to_owned(), v)));
        if holder {
            op.data.insert("cardFromHolderName".into(), json!("CARDHOLDER NAME"));
        }
        op.updated_at = PAID_AT;
        op
    }

    fn token_at(m: &Merchant, op: Operation, now: Timestamp) -> String {
        let ev = event(op, Status::Pending);
        let id = DeliveryId::from_suffix("u");
        let input = RenderInput {
            delivery_id: &id,
            url: "https://m.example/u",
            event: &ev,
            merchant: m,
            now,
        };
        let out = Dialect::Uapay.render(&input).expect("renders");
        assert_eq!(out.header("content-type"), Some("application/json"));
        let body: Value = serde_json::from_slice(&out.body).expect("JSON body");
        assert_eq!(keys(&body), ["token"]);
        body["token"].as_str().expect("token is a string").to_owned()
    }

    fn claims(op: Operation) -> Value {
        segment(&token_at(&merchant(Dialect::Uapay), op, PAID_AT), 1)
    }

    /// Same keys in the same order, and the same value under each.
    fn check_same(ours: &Value, seed: &Value) {
        assert_eq!(keys(ours), keys(seed));
        for key in keys(seed) {
            assert_eq!(ours[key], seed[key], "{key}");
        }
    }

    #[test]
    fn seed_003_header_segment() {
        let ours = token_at(&merchant(Dialect::Uapay), seed_operation(false), PAID_AT);
        let header = |t: &str| t.split('.').next().map(str::to_owned);
        assert_eq!(header(&ours), header(SEED_TOKEN));
        assert_eq!(segment(&ours, 0), json!({"alg":"HS256","typ":"JWT"}));
    }

    #[test]
    fn seed_003_example_body() {
        check_same(
            &claims(seed_operation(true)),
            &serde_json::from_str(SEED_EXAMPLE).expect("JSON"),
        );
    }

    #[test]
    fn seed_003_token_payload() {
        let mut ours = claims(seed_operation(false));
        // SPEC: reversalAmount defaults to 0 (the seed's example body has it, its token not).
        let removed = ours.as_object_mut().expect("object").shift_remove("reversalAmount");
        assert_eq!(removed, Some(json!(0)));
        check_same(&ours, &segment(SEED_TOKEN, 1));
    }

    #[test]
    fn our_signature_verifies_with_jsonwebtoken() {
        let m = merchant(Dialect::Uapay);
        let token = token_at(&m, seed_operation(true), PAID_AT);
        let key = DecodingKey::from_secret(m.signing_secret.expose().as_bytes());
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let data = decode::<Value>(&token, &key, &validation).expect("valid HS256 signature");
        assert_eq!(data.claims["paymentNumber"], 249_503);
        let wrong = DecodingKey::from_secret(b"another secret");
        assert!(decode::<Value>(&token, &wrong, &validation).is_err());
    }

    #[test]
    fn iat_is_fresh_per_attempt() {
        let m = merchant(Dialect::Uapay);
        let later = Timestamp(PAID_AT.0 + 300_000);
        let first = segment(&token_at(&m, seed_operation(false), PAID_AT), 1);
        let retry = segment(&token_at(&m, seed_operation(false), later), 1);
        assert_eq!(
            (first["iat"].as_i64(), retry["iat"].as_i64()),
            (Some(1_618_221_811), Some(1_618_222_111))
        );
        assert_eq!(first["payDate"], retry["payDate"], "the payment time does not move");
    }

    #[test]
    fn status_mapping() {
        let check = |op: Operation, status: &str, payment: &str| {
            let c = claims(op);
            assert_eq!(
                (c["status"].as_str(), c["paymentStatus"].as_str()),
                (Some(status), Some(payment))
            );
            c
        };
        check(operation(Status::Pending), "NEW", "PENDING");
        check(operation(Status::Requires3ds), "NEW", "NEEDS_CONFIRMATION");
        check(operation(Status::Success), "FINISHED", "FINISHED");
        check(operation(Status::Failed), "CANCELED", "REJECTED");
        check(operation(Status::Expired), "CANCELED", "CANCELED");
        let reversed = check(operation(Status::Reversed), "REVERSED", "REVERSED");
        assert_eq!(reversed["reversalAmount"], 100_000);
        check(operation(Status::Refunded), "REVERSED", "RETURNED");
        let mut held = operation(Status::Success);
        held.data.insert("two_phase".into(), json!(true));
        let held = check(held, "PAID", "HOLDED");
        assert_eq!(held["holdDate"], "2021-04-12T10:03:10.000Z");
        assert!(held.get("payDate").is_none());
        let m = merchant(Dialect::Uapay);
        assert_eq!(Dialect::Uapay.destination(&m, &operation(Status::Created)), None);
    }

    #[test]
    fn optional_fields_are_omitted_and_defaults_filled() {
        let c = claims(operation(Status::Pending));
        let expect = [
            "paymentId",
            "invoiceId",
            "externalId",
            "paymentNumber",
            "cardToMasked",
            "amount",
            "reversalAmount",
            "status",
            "type",
            "systemType",
            "paymentStatus",
            "createDate",
            "iat",
        ];
        assert_eq!(keys(&c), expect);
        assert_eq!((&c["paymentId"], &c["cardToMasked"]), (&json!("op_0f91bb90"), &Value::Null));
        assert_eq!((&c["type"], &c["systemType"]), (&json!("PAY"), &json!("ECOM")));
    }

    #[test]
    fn only_exactly_200_acknowledges() {
        let reply =
            |status| Reply { status, retry_after: None, request_body: b"", body: b"", now: T0 };
        assert_eq!(Dialect::Uapay.classify(&reply(200)), Verdict::Delivered);
        for status in [201, 204] {
            assert!(
                matches!(Dialect::Uapay.classify(&reply(status)), Verdict::Retry { .. }),
                "{status}"
            );
        }
    }

    #[test]
    fn default_policy_is_the_seeds() {
        let p = Dialect::Uapay.default_policy();
        let secs: Vec<u64> = p.delays.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, [5, 300, 3600, 7200, 86_400]);
        assert_eq!(p.max_attempts(), 6);
    }
}
