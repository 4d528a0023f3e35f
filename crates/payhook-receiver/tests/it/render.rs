//! Callbacks as payhook sends them: a merchant, an operation and an event built from
//! payhook-core's model, rendered by payhook-core's dialects at the current time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use josekit::jwk::{alg::ec::EcCurve, Jwk};
use payhook_core::dialect::{Dialect, Outgoing, RenderInput};
use payhook_core::ids::{DeliveryId, EventId, MerchantId, OperationId};
use payhook_core::model::{CallbackSettings, Event, Merchant, Operation};
use payhook_core::signing::{signature_header, SigningSecret};
use payhook_core::status::Status;
use payhook_core::Timestamp;
use serde_json::{json, Map, Value};

/// The wall clock in unix seconds: the receiver checks timestamps against it.
pub fn now() -> i64 {
    Timestamp(now_ms()).unix_seconds()
}

fn now_ms() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    i64::try_from(d.as_millis()).expect("fits")
}

pub struct Setup {
    pub dialect: Dialect,
    pub merchant: Merchant,
    pub encrypt: bool,
    /// The time the callbacks are rendered at (this attempt).
    pub now: Timestamp,
}

impl Setup {
    pub fn new(dialect: Dialect) -> Self {
        let t = Timestamp(now_ms());
        let merchant = Merchant::new(
            MerchantId::from_suffix("1"),
            "Test shop",
            dialect,
            Some("https://merchant.example/cb".into()),
            SigningSecret::from_key(&[1u8; 32]),
            t,
        );
        Setup { dialect, merchant, encrypt: false, now: t }
    }

    /// An ECOM merchant with a fresh P-384 key; returns the private JWK too.
    pub fn encrypting() -> (Self, Value) {
        let private = Jwk::generate_ec_key(EcCurve::P384).expect("generates a key");
        let public = private.to_public_key().expect("public part");
        let mut s = Setup::new(Dialect::Ecom);
        let map: &Map<String, Value> = public.as_ref();
        s.merchant.encryption_key = Some(Value::Object(map.clone()));
        s.encrypt = true;
        let private: &Map<String, Value> = private.as_ref();
        (s, Value::Object(private.clone()))
    }

    pub fn secret(&self) -> String {
        self.merchant.signing_secret.expose().to_owned()
    }

    /// A new secret; the old one signs beside it for an hour.
    pub fn rotate(&mut self) {
        let old =
            std::mem::replace(&mut self.merchant.signing_secret, SigningSecret::from_key(&[2; 32]));
        self.merchant.previous_secret = Some((old, Timestamp(self.now.0 + 3_600_000)));
    }

    fn operation(&self, status: Status) -> Operation {
        let mut data = Map::new();
        data.insert("rrn".into(), json!("428411449064"));
        data.insert("operation".into(), json!({"rrn": "428411449064", "type": "PURCHASE"}));
        Operation {
            id: OperationId::from_suffix("0f91bb90"),
            number: 245_786,
            merchant_id: self.merchant.id.clone(),
            external_id: "order-1".into(),
            amount: 100_000,
            currency: "UAH".into(),
            kind: "purchase".into(),
            status,
            seq: 2,
            callback: CallbackSettings {
                success_url: Some("https://merchant.example/ok?shop=7".into()),
                fail_url: Some("https://merchant.example/fail".into()),
                encrypt: self.encrypt,
                ..CallbackSettings::default()
            },
            data,
            created_at: self.now,
            updated_at: self.now,
        }
    }
}

/// The callback of a change to `status` (from `pending`), as the dispatcher would send it now.
pub fn render(s: &Setup, status: Status) -> Outgoing {
    let op = s.operation(status);
    let url = s.dialect.destination(&s.merchant, &op).expect("the status calls back");
    let event = Event {
        id: EventId::from_suffix("1"),
        position: 1,
        operation_id: op.id.clone(),
        merchant_id: op.merchant_id.clone(),
        seq: op.seq,
        status,
        previous_status: Status::Pending,
        event_key: None,
        created_at: s.now,
        operation: op,
    };
    let id = DeliveryId::from_suffix("test");
    let input = RenderInput {
        delivery_id: &id,
        url: &url,
        event: &event,
        merchant: &s.merchant,
        now: s.now,
    };
    s.dialect.render(&input).expect("renders")
}

/// `out` with its body signed anew with the merchant's secret (a forger who knows the secret).
pub fn resign(s: &Setup, out: &Outgoing) -> Outgoing {
    let ts = s.now.unix_seconds();
    let sig = signature_header(&[&s.merchant.signing_secret], "dlv_test", ts, &out.body);
    let mut out = out.clone();
    for (k, v) in &mut out.headers {
        if k == "webhook-signature" {
            *v = sig.clone();
        }
    }
    out
}

pub fn b64url(bytes: &[u8]) -> String {
    B64URL.encode(bytes)
}

/// The payload of `token` with `key` set to `value`, serialized.
pub fn claims_with(token: &str, key: &str, value: i64) -> Vec<u8> {
    let payload = token.split('.').nth(1).expect("payload segment");
    let mut claims: Value =
        serde_json::from_slice(&B64URL.decode(payload).expect("b64")).expect("json");
    claims[key] = json!(value);
    serde_json::to_vec(&claims).expect("serializes")
}
