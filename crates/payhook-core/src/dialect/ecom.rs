//! `ecom`: Bank Alliance (ALB) ECOM `notificationUrl` callbacks (seeds 002, 004) — the order
//! object with its transaction, as JSON or as a compact JWE to the merchant's P-384 key, signed
//! with Standard Webhooks headers over the body as sent.
//!
//! Encryption is the one place in payhook-core that draws randomness itself: ECDH-ES needs an
//! ephemeral key and AES-GCM an IV from a CSPRNG (OpenSSL's, inside `josekit`). That randomness
//! must never be injectable, so it is a deliberate exception to "the core takes its RNG as an
//! argument"; tests check encryption by decrypting.

use super::standard::signed_headers;
use super::{Method, Outgoing, RenderError, RenderInput};
use crate::model::{Merchant, Operation};
use crate::retry::RetryPolicy;
use crate::status::Status;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use josekit::jwe::{self, JweHeader, ECDH_ES_A256KW};
use josekit::jwk::Jwk;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// The content encryption of the JWE (the key wrapping is [`ECDH_ES_A256KW`]).
const ENC: &str = "A256GCM";
/// The curve of the merchant's key, as the ALB SDKs generate it.
const CURVE: &str = "P-384";
/// The header that tells an ALB receiver the body is a JWE.
const ENCRYPTED_HEADER: &str = "X-Encrypted_Body";

/// ALB's `orderStatus` / transaction `status` for a canonical status; `created` sends nothing.
fn order_status(status: Status) -> Option<&'static str> {
    match status {
        Status::Created => None,
        Status::Pending => Some("PENDING"),
        Status::Requires3ds => Some("REQUIRED_3DS"),
        Status::Success => Some("SUCCESS"),
        Status::Failed | Status::Expired => Some("FAIL"),
        Status::Reversed => Some("REVERSED"),
        Status::Refunded => Some("REFUNDED"),
    }
}

/// The order's notificationUrl: the operation's callback URL, else the merchant's; every status
/// change after `created`.
pub(super) fn destination(merchant: &Merchant, op: &Operation) -> Option<String> {
    order_status(op.status)?;
    super::callback_url(merchant, op)
}

/// ALB's schedule: 5 s, 30 s, 5 min, 30 min, 1 h, without jitter.
pub(super) fn default_policy() -> RetryPolicy {
    let secs = [5, 30, 300, 1800, 3600];
    RetryPolicy::fixed(secs.into_iter().map(Duration::from_secs).collect())
}

pub(super) fn render(input: &RenderInput<'_>) -> Result<Outgoing, RenderError> {
    let json = super::json_bytes(&Value::Object(order(input)?))?;
    let encrypt = input.event.operation.callback.encrypt;
    let (body, content_type) = if encrypt {
        (encrypt_to(input.merchant, &json)?.into_bytes(), "text/plain")
    } else {
        (json, "application/json")
    };
    let mut headers = signed_headers(input, &body, content_type);
    if encrypt {
        headers.push((ENCRYPTED_HEADER.to_owned(), "true".to_owned()));
    }
    Ok(Outgoing { method: Method::Post, url: input.url.to_owned(), headers, body })
}

/// The order object in seed 004's key order. payhook fills the canonical fields itself; `data`
/// only supplies ALB's own fields, and those absent from `data` are omitted rather than sent
/// empty (`statusUrl`, `hppOrderId`, `redirectUrl`, `hppDirectType`, `expiredOrderDate`).
fn order(input: &RenderInput<'_>) -> Result<Map<String, Value>, RenderError> {
    let op = &input.event.operation;
    let status = input.event.status;
    let mapped =
        order_status(status).ok_or_else(|| super::unmapped(super::Dialect::Ecom, status))?;
    let data = &op.data;
    let merchant_id = text_or(data, "merchantId", input.merchant.id.as_str());
    let mut o = Map::new();
    o.insert("ecomOrderId".into(), text_or(data, "ecomOrderId", op.id.as_str()));
    o.insert("coinAmount".into(), json!(op.amount));
    o.insert("merchantId".into(), merchant_id.clone());
    super::copy_from_data(&mut o, data, &["statusUrl", "hppOrderId", "redirectUrl"]);
    o.insert("notificationUrl".into(), json!(input.url));
    o.insert("notificationEncryption".into(), json!(op.callback.encrypt));
    o.insert("hppPayType".into(), text_or(data, "hppPayType", "PURCHASE"));
    super::copy_from_data(&mut o, data, &["hppDirectType"]);
    o.insert("merchantRequestId".into(), json!(op.external_id));
    o.insert("createDate".into(), json!(op.created_at.ecom_format()));
    o.insert("paymentMethods".into(), payment_methods(data));
    o.insert("orderStatus".into(), json!(mapped));
    super::copy_from_data(&mut o, data, &["expiredOrderDate"]);
    let transaction = transaction(op, status, mapped, merchant_id);
    o.insert(transaction_field(input.merchant).into(), Value::Object(transaction));
    Ok(o)
}

/// `data[key]` when it is a string, else `default`: ids ALB assigned win over payhook's own.
fn text_or(data: &Map<String, Value>, key: &str, default: &str) -> Value {
    match data.get(key) {
        Some(Value::String(s)) => json!(s),
        _ => json!(default),
    }
}

/// `data.paymentMethods` (an array, or one method as a string), default `["CARD"]`.
fn payment_methods(data: &Map<String, Value>) -> Value {
    match data.get("paymentMethods") {
        Some(Value::Array(list)) => Value::Array(list.clone()),
        Some(Value::String(one)) => json!([one]),
        _ => json!(["CARD"]),
    }
}

/// `operation` (seed 004, the SDKs), or `operations` (seed 002) when the merchant's setting
/// `ecom_operations_field` says so.
fn transaction_field(merchant: &Merchant) -> &'static str {
    match merchant.settings.get("ecom_operations_field").and_then(Value::as_str) {
        Some("operations") => "operations",
        _ => "operation",
    }
}

/// The transaction object: ALB's fields from `data.operation` (or `data.operations`), then the
/// canonical ones, which replace any of the same name in place.
fn transaction(
    op: &Operation,
    status: Status,
    mapped: &str,
    merchant_id: Value,
) -> Map<String, Value> {
    let from_data = op.data.get("operation").or_else(|| op.data.get("operations"));
    let mut t = match from_data {
        Some(Value::Object(fields)) => fields.clone(),
        _ => Map::new(),
    };
    if status == Status::Refunded {
        t.insert("type".into(), json!("REFUND"));
    }
    t.insert("status".into(), json!(mapped));
    t.insert("coinAmount".into(), json!(op.amount));
    t.insert("merchantId".into(), merchant_id);
    t.insert("merchantRequestId".into(), json!(op.external_id));
    t.insert("transactionCurrency".into(), json!(numeric_currency(&op.currency)));
    t
}

/// ISO 4217 numeric code of `currency`, as ALB sends it (`"980"`). A numeric code passes
/// through; an alphabetic code outside this table is sent as given rather than failing the
/// callback.
pub(crate) fn numeric_currency(currency: &str) -> String {
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_digit()) {
        return currency.to_owned();
    }
    let numeric = match currency.to_ascii_uppercase().as_str() {
        "UAH" => "980",
        "USD" => "840",
        "EUR" => "978",
        "GBP" => "826",
        "PLN" => "985",
        "CHF" => "756",
        "CZK" => "203",
        "MDL" => "498",
        _ => return currency.to_owned(),
    };
    numeric.to_owned()
}

/// The compact JWE (ECDH-ES+A256KW, A256GCM) of `plain` to the merchant's EC P-384 public key.
fn encrypt_to(merchant: &Merchant, plain: &[u8]) -> Result<String, RenderError> {
    let key = merchant.encryption_key.as_ref().ok_or(RenderError::MissingKey)?;
    let jwk = p384_key(key)?;
    let encrypter = ECDH_ES_A256KW.encrypter_from_jwk(&jwk).map_err(jose_error)?;
    let mut header = JweHeader::new();
    header.set_content_encryption(ENC);
    jwe::serialize_compact(plain, &header, &encrypter).map_err(jose_error)
}

/// The length of a P-384 coordinate: RFC 7518 §6.2.1.2 wants the full size, 48 octets.
const COORDINATE_LEN: usize = 48;

/// Why a merchant's `encryption_key` cannot take ECOM callbacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("encryption_key {0}")]
pub struct InvalidKey(String);

/// Checks that `key` is what ECOM encryption needs: an EC P-384 *public* JWK (`kty` `EC`, `crv`
/// `P-384`, the point in `x` and `y`, on the curve) and nothing private. A JWK with `d` is
/// refused rather than stripped: a private key sent to payhook is a leaked key, and the
/// merchant should know.
pub fn check_public_key(key: &Value) -> Result<(), InvalidKey> {
    public_jwk(key).map(|_| ())
}

/// [`check_public_key`], returning the parsed JWK.
fn public_jwk(key: &Value) -> Result<Jwk, InvalidKey> {
    let bad = |why: &str| InvalidKey(why.to_owned());
    let map = key.as_object().ok_or_else(|| bad("must be a JWK object"))?;
    if map.get("kty").and_then(Value::as_str) != Some("EC") {
        return Err(bad("must be an EC key (\"kty\": \"EC\")"));
    }
    if map.get("crv").and_then(Value::as_str) != Some(CURVE) {
        return Err(bad("must be on curve P-384 (\"crv\": \"P-384\"), the curve ALB uses"));
    }
    if map.contains_key("d") {
        return Err(bad("is a private key (it has \"d\"): give payhook only the public part"));
    }
    for name in ["x", "y"] {
        check_coordinate(map, name)?;
    }
    let jwk = Jwk::from_map(map.clone()).map_err(|e| InvalidKey(format!("is not a JWK: {e}")))?;
    // Building the encrypter loads the point into OpenSSL, which refuses one off the curve.
    ECDH_ES_A256KW
        .encrypter_from_jwk(&jwk)
        .map_err(|_| bad("is not a point on P-384 (check x and y)"))?;
    Ok(jwk)
}

/// `map[name]` is the base64url (unpadded) of a 48-octet coordinate.
fn check_coordinate(map: &Map<String, Value>, name: &str) -> Result<(), InvalidKey> {
    let text = map
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| InvalidKey(format!("needs the coordinate {name:?} (a base64url string)")))?;
    match B64URL.decode(text) {
        Ok(bytes) if bytes.len() == COORDINATE_LEN => Ok(()),
        _ => Err(InvalidKey(format!("{name:?} must be the base64url of {COORDINATE_LEN} octets"))),
    }
}

/// The merchant's key, checked as at registration (a key stored before that check existed
/// fails here with the same reason).
fn p384_key(key: &Value) -> Result<Jwk, RenderError> {
    public_jwk(key).map_err(|e| RenderError::Invalid(e.to_string()))
}

fn jose_error(e: josekit::JoseError) -> RenderError {
    RenderError::Invalid(format!("ecom encryption: {e}"))
}

#[cfg(test)]
mod tests {
    use super::numeric_currency;
    use crate::dialect::{Dialect, Outgoing, RenderError, RenderInput, Reply, Verdict};
    use crate::fixtures::{event, merchant, operation, T0};
    use crate::golden::{diff, keys, shape_diff, Diff};
    use crate::ids::DeliveryId;
    use crate::model::{Merchant, Operation};
    use crate::signing::verify;
    use crate::status::Status;
    use crate::Timestamp;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
    use base64::Engine;
    use josekit::jwe::{self, ECDH_ES_A256KW};
    use josekit::jwk::{alg::ec::EcCurve, Jwk};
    use serde_json::{json, Map, Value};

    const SEED_002: &str = include_str!("../../tests/golden/ecom_seed_002.json");
    const SEED_004: &str = include_str!("../../tests/golden/ecom_seed_004.json");

    fn seed(text: &str) -> Value {
        serde_json::from_str(text).expect("golden file is JSON")
    }

    fn render_with(m: &Merchant, op: Operation, url: &str) -> Result<Outgoing, RenderError> {
        let ev = event(op, Status::Pending);
        let id = DeliveryId::from_suffix("e");
        let now = Timestamp(T0.0 + 1_000);
        let input = RenderInput { delivery_id: &id, url, event: &ev, merchant: m, now };
        Dialect::Ecom.render(&input)
    }

    fn render_json(m: &Merchant, op: Operation, url: &str) -> Value {
        let out = render_with(m, op, url).expect("renders");
        assert_eq!(out.header("content-type"), Some("application/json"));
        assert_eq!(out.header("x-encrypted_body"), None);
        serde_json::from_slice(&out.body).expect("JSON body")
    }

    /// An operation carrying a seed's order fields in `data`, the rest of the seed's values in
    /// the canonical fields.
    fn seed_operation(seed: &Value, transaction: &str) -> Operation {
        let mut op = operation(Status::Success);
        op.amount = seed["coinAmount"].as_i64().expect("coinAmount");
        op.external_id = seed["merchantRequestId"].as_str().expect("merchantRequestId").into();
        op.currency = "UAH".into();
        let fields = [
            "ecomOrderId",
            "merchantId",
            "statusUrl",
            "hppOrderId",
            "redirectUrl",
            "hppPayType",
            "hppDirectType",
            "paymentMethods",
            "expiredOrderDate",
        ];
        for key in fields {
            if let Some(v) = seed.get(key) {
                op.data.insert(key.into(), v.clone());
            }
        }
        op.data.insert("operation".into(), seed[transaction].clone());
        op
    }

    fn at(path: &str, d: Diff) -> (String, Diff) {
        (path.to_owned(), d)
    }

    #[test]
    fn seed_004_body() {
        let seed = seed(SEED_004);
        let mut op = seed_operation(&seed, "operation");
        op.created_at = Timestamp::parse_rfc3339("2025-07-21T10:20:23.49Z").expect("date");
        let ours = render_json(&merchant(Dialect::Ecom), op, "https://example.com/notify");
        assert_eq!(keys(&ours), keys(&seed), "top-level keys in seed 004's order");
        // The seed's `operation` is an empty placeholder; SPEC fills it from seed 002 and the
        // SDKs. Its notificationUrl is a placeholder too.
        let filled =
            ["status", "coinAmount", "merchantId", "merchantRequestId", "transactionCurrency"];
        let mut expect = vec![at("/notificationUrl", Diff::Value)];
        expect.extend(filled.iter().map(|k| at(&format!("/operation/{k}"), Diff::Extra)));
        assert_eq!(diff(&seed, &ours), expect);
        assert_eq!(ours["operation"]["transactionCurrency"], "980");
        assert_eq!(ours["operation"]["merchantId"], seed["merchantId"]);
    }

    #[test]
    fn seed_002_body_with_operations_field() {
        let seed = seed(SEED_002);
        let mut m = merchant(Dialect::Ecom);
        m.settings.insert("ecom_operations_field".into(), json!("operations"));
        let op = seed_operation(&seed, "operations");
        let ours = render_json(&m, op, "https://example.com/notify");
        // notificationEncryption is top-level in seed 004 (seed 002 lists it in the table);
        // merchantRequestId in the transaction comes from seed 002's input table.
        let expect_shape = [
            at("/operations/merchantRequestId", Diff::Extra),
            at("/notificationEncryption", Diff::Extra),
        ];
        assert_eq!(shape_diff(&seed, &ours), expect_shape);
        // Values: everything matches but the dates payhook formats the seed-004 way.
        let values: Vec<_> =
            diff(&seed, &ours).into_iter().filter(|(_, d)| *d == Diff::Value).collect();
        assert_eq!(values, [at("/createDate", Diff::Value)]);
        assert_eq!(ours["createDate"], "2021-04-12 10:03:10.00+00:00");
    }

    #[test]
    fn defaults_when_data_is_empty() {
        let m = merchant(Dialect::Ecom);
        let ours = render_json(&m, operation(Status::Pending), "https://m.example/n");
        let expect = json!({
            "ecomOrderId": "op_0f91bb90",
            "coinAmount": 100_000,
            "merchantId": "mer_1",
            "notificationUrl": "https://m.example/n",
            "notificationEncryption": false,
            "hppPayType": "PURCHASE",
            "merchantRequestId": "order-1",
            "createDate": "2021-04-12 10:03:10.00+00:00",
            "paymentMethods": ["CARD"],
            "orderStatus": "PENDING",
            "operation": {
                "status": "PENDING",
                "coinAmount": 100_000,
                "merchantId": "mer_1",
                "merchantRequestId": "order-1",
                "transactionCurrency": "980"
            }
        });
        assert_eq!(diff(&expect, &ours), []);
        assert_eq!(keys(&ours), keys(&expect));
    }

    #[test]
    fn data_never_overrides_canonical_fields() {
        let mut op = operation(Status::Refunded);
        for (k, v) in
            [("coinAmount", json!(1)), ("orderStatus", json!("X")), ("createDate", json!("x"))]
        {
            op.data.insert(k.into(), v);
        }
        let tx = json!({"status": "X", "coinAmount": 1, "type": "PURCHASE", "rrn": "42"});
        op.data.insert("operation".into(), tx);
        let ours = render_json(&merchant(Dialect::Ecom), op, "https://m.example/n");
        assert_eq!(ours["coinAmount"], 100_000);
        assert_eq!(ours["orderStatus"], "REFUNDED");
        assert_eq!(ours["createDate"], "2021-04-12 10:03:10.00+00:00");
        let tx = &ours["operation"];
        assert_eq!((&tx["status"], &tx["coinAmount"]), (&json!("REFUNDED"), &json!(100_000)));
        assert_eq!((&tx["type"], &tx["rrn"]), (&json!("REFUND"), &json!("42")));
    }

    #[test]
    fn status_mapping() {
        let m = merchant(Dialect::Ecom);
        assert_eq!(Dialect::Ecom.destination(&m, &operation(Status::Created)), None);
        for (status, expect) in [
            (Status::Pending, "PENDING"),
            (Status::Requires3ds, "REQUIRED_3DS"),
            (Status::Success, "SUCCESS"),
            (Status::Failed, "FAIL"),
            (Status::Expired, "FAIL"),
            (Status::Reversed, "REVERSED"),
            (Status::Refunded, "REFUNDED"),
        ] {
            let op = operation(status);
            assert!(Dialect::Ecom.destination(&m, &op).is_some(), "{status} calls back");
            let ours = render_json(&m, op, "https://m.example/n");
            assert_eq!(
                (&ours["orderStatus"], &ours["operation"]["status"]),
                (&json!(expect), &json!(expect))
            );
        }
    }

    #[test]
    fn currency_table() {
        for (given, expect) in [
            ("UAH", "980"),
            ("uah", "980"),
            ("980", "980"),
            ("USD", "840"),
            ("EUR", "978"),
            ("GBP", "826"),
            ("PLN", "985"),
            ("XYZ", "XYZ"),
        ] {
            assert_eq!(numeric_currency(given), expect, "{given}");
        }
    }

    #[test]
    fn plain_body_carries_standard_webhooks_headers() {
        let m = merchant(Dialect::Ecom);
        let out =
            render_with(&m, operation(Status::Success), "https://m.example/n").expect("renders");
        let ts = Timestamp(T0.0 + 1_000).unix_seconds();
        let sig = out.header("webhook-signature").expect("signed");
        assert_eq!(verify(&m.signing_secret, "dlv_e", ts, &out.body, sig), Ok(()));
    }

    fn encrypting_merchant() -> (Merchant, Jwk) {
        let private = Jwk::generate_ec_key(EcCurve::P384).expect("generates a key");
        let public = private.to_public_key().expect("public part");
        let mut m = merchant(Dialect::Ecom);
        let map: &Map<String, Value> = public.as_ref();
        m.encryption_key = Some(Value::Object(map.clone()));
        (m, private)
    }

    fn encrypted_operation() -> Operation {
        let mut op = operation(Status::Success);
        op.callback.encrypt = true;
        op
    }

    #[test]
    fn encrypted_body_decrypts_with_the_merchant_key() {
        let (m, private) = encrypting_merchant();
        let out = render_with(&m, encrypted_operation(), "https://m.example/n").expect("renders");
        assert_eq!(out.header("content-type"), Some("text/plain"));
        assert_eq!(out.header("X-Encrypted_Body"), Some("true"));
        let ts = Timestamp(T0.0 + 1_000).unix_seconds();
        let sig = out.header("webhook-signature").expect("signed");
        assert_eq!(verify(&m.signing_secret, "dlv_e", ts, &out.body, sig), Ok(()), "over the JWE");
        let token = std::str::from_utf8(&out.body).expect("compact JWE is text");
        assert_eq!(token.split('.').count(), 5, "compact serialization");
        let decrypter = ECDH_ES_A256KW.decrypter_from_jwk(&private).expect("decrypter");
        let (plain, header) = jwe::deserialize_compact(token, &decrypter).expect("decrypts");
        assert_eq!(header.algorithm(), Some("ECDH-ES+A256KW"));
        assert_eq!(header.content_encryption(), Some("A256GCM"));
        let body: Value = serde_json::from_slice(&plain).expect("JSON inside");
        assert_eq!(body["orderStatus"], "SUCCESS");
        assert_eq!(body["notificationEncryption"], true);
    }

    #[test]
    fn encryption_needs_a_p384_key() {
        let m = merchant(Dialect::Ecom);
        let err = render_with(&m, encrypted_operation(), "https://m.example/n");
        assert_eq!(err, Err(RenderError::MissingKey));
        let p256 =
            Jwk::generate_ec_key(EcCurve::P256).expect("key").to_public_key().expect("public");
        let mut m = merchant(Dialect::Ecom);
        let map: &Map<String, Value> = p256.as_ref();
        m.encryption_key = Some(Value::Object(map.clone()));
        let err = render_with(&m, encrypted_operation(), "https://m.example/n");
        assert!(matches!(err, Err(RenderError::Invalid(_))), "{err:?}");
    }

    fn jwk_value(jwk: &Jwk) -> Value {
        let map: &Map<String, Value> = jwk.as_ref();
        Value::Object(map.clone())
    }

    #[test]
    fn check_public_key_accepts_only_a_public_p384_jwk() {
        use super::check_public_key;
        let private = Jwk::generate_ec_key(EcCurve::P384).expect("key");
        let public = jwk_value(&private.to_public_key().expect("public"));
        assert_eq!(check_public_key(&public), Ok(()));
        let with = |k: &str, v: Value| {
            let mut key = public.clone();
            key[k] = v;
            key
        };
        let without = |k: &str| {
            let mut key = public.clone();
            key.as_object_mut().expect("object").remove(k);
            key
        };
        let p256 = Jwk::generate_ec_key(EcCurve::P256).expect("key");
        let b64 = |bytes: &[u8]| json!(B64URL.encode(bytes));
        for (bad, why) in [
            (jwk_value(&private), "private"),
            (jwk_value(&p256.to_public_key().expect("public")), "P-384"),
            (json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}), "EC key"),
            (json!({"kty": "oct", "k": "c2VjcmV0"}), "EC key"),
            (json!("a PEM string"), "JWK object"),
            (without("crv"), "P-384"),
            (without("y"), "\"y\""),
            (with("x", json!(42)), "\"x\""),
            (with("x", b64(&[7; 32])), "48 octets"),
            (with("y", json!("not base64url!")), "48 octets"),
            (with("x", b64(&[1; 48])), "not a point on P-384"),
        ] {
            match check_public_key(&bad) {
                Err(e) => assert!(e.to_string().contains(why), "{bad}: {e} (want {why:?})"),
                Ok(()) => panic!("{bad} was accepted"),
            }
        }
    }

    #[test]
    fn only_200_acknowledges() {
        let reply =
            |status| Reply { status, retry_after: None, request_body: b"", body: b"", now: T0 };
        assert_eq!(Dialect::Ecom.classify(&reply(200)), Verdict::Delivered);
        assert!(matches!(Dialect::Ecom.classify(&reply(204)), Verdict::Retry { .. }));
    }

    #[test]
    fn default_policy_is_albs() {
        let p = Dialect::Ecom.default_policy();
        let secs: Vec<u64> = p.delays.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, [5, 30, 300, 1800, 3600]);
    }
}
