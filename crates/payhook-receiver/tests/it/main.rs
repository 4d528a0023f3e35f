//! payhook-receiver against the real thing: callbacks rendered by payhook-core's dialects are
//! accepted, and tampered, stale or wrongly keyed ones are refused — for every dialect.

mod render;

use http::{HeaderMap, HeaderName, HeaderValue};
use payhook_core::dialect::{Dialect as CoreDialect, Outgoing, Reply, Verdict};
use payhook_core::status::Status;
use payhook_receiver::signing::SigningSecret;
use payhook_receiver::xpay::XpayOutcome;
use payhook_receiver::{
    ecom, standard, uapay, Callback, Dialect, Incoming, ReceiveError, Receiver,
};
use render::{now, render, Setup};

fn headers(out: &Outgoing) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in &out.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).expect("header name");
        map.append(name, HeaderValue::from_str(v).expect("header value"));
    }
    map
}

fn receive(receiver: &Receiver, out: &Outgoing) -> Result<Callback, ReceiveError> {
    let query = out.url.split_once('?').map(|(_, q)| q);
    let headers = headers(out);
    receiver.receive_at(&Incoming { query, headers: &headers, body: &out.body }, now())
}

fn tampered(out: &Outgoing, from: &str, to: &str) -> Outgoing {
    let text = String::from_utf8(out.body.clone()).expect("utf-8 body");
    assert!(text.contains(from), "{from:?} not in {text}");
    Outgoing { body: text.replacen(from, to, 1).into_bytes(), ..out.clone() }
}

fn with_header(out: &Outgoing, name: &str, value: &str) -> Outgoing {
    let mut out = out.clone();
    out.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    out.headers.push((name.to_owned(), value.to_owned()));
    out
}

#[test]
fn standard_valid() {
    let s = Setup::new(CoreDialect::Standard);
    let out = render(&s, Status::Success);
    let receiver = Receiver::new(Dialect::Standard).with_secret(&s.secret()).expect("secret");
    let Callback::Standard(ev) = receive(&receiver, &out).expect("valid") else { panic!() };
    assert_eq!(ev.webhook_id, "dlv_test");
    assert_eq!(ev.event_type, "operation.status_changed");
    assert_eq!((ev.data.status.as_str(), ev.data.previous_status.as_str()), ("success", "pending"));
    assert_eq!(
        (ev.data.external_id.as_str(), ev.data.amount, ev.data.seq),
        ("order-1", 100_000, 2)
    );
    assert_eq!(ev.data.data["rrn"], "428411449064");
    assert_eq!(Callback::Standard(ev).answer().status, 200);
}

#[test]
fn standard_tampered_stale_or_wrongly_keyed_is_refused() {
    let s = Setup::new(CoreDialect::Standard);
    let out = render(&s, Status::Success);
    let receiver = Receiver::new(Dialect::Standard).with_secret(&s.secret()).expect("secret");
    let bad = |o: &Outgoing| receive(&receiver, o).expect_err("refused");
    assert_eq!(bad(&tampered(&out, "100000", "100001")), ReceiveError::BadSignature);
    assert_eq!(bad(&tampered(&out, "\"success\"", "\"failed\"")), ReceiveError::BadSignature);
    assert_eq!(bad(&with_header(&out, "webhook-id", "dlv_other")), ReceiveError::BadSignature);
    let ts = (now() - 3600).to_string();
    assert_eq!(
        bad(&with_header(&out, "webhook-timestamp", &ts)),
        ReceiveError::StaleTimestamp(3600)
    );
    let mut unsigned = out.clone();
    unsigned.headers.retain(|(k, _)| k != "webhook-signature");
    assert_eq!(bad(&unsigned), ReceiveError::MissingHeader("webhook-signature"));
    let other = SigningSecret::from_key(&[9; 32]);
    let wrong = Receiver::new(Dialect::Standard).with_secret(other.expose()).expect("secret");
    assert_eq!(receive(&wrong, &out), Err(ReceiveError::BadSignature));
}

#[test]
fn standard_verifies_with_either_secret_during_rotation() {
    let mut s = Setup::new(CoreDialect::Standard);
    let old = s.merchant.signing_secret.clone();
    s.rotate();
    let out = render(&s, Status::Success);
    for secret in [old.expose(), s.secret().as_str()] {
        let webhook = standard::Webhook::new(secret).expect("secret");
        assert!(webhook.verify_at(&headers(&out), &out.body, now()).is_ok());
    }
}

#[test]
fn xpay_query_parses() {
    let s = Setup::new(CoreDialect::Xpay);
    let receiver = Receiver::new(Dialect::Xpay);
    let Callback::Xpay(ok) = receive(&receiver, &render(&s, Status::Success)).expect("parses")
    else {
        panic!()
    };
    assert_eq!((ok.state, ok.xray_operation_id, ok.outcome()), (10, 245_786, XpayOutcome::Success));
    let Callback::Xpay(fail) = receive(&receiver, &render(&s, Status::Failed)).expect("parses")
    else {
        panic!()
    };
    assert_eq!(fail.outcome(), XpayOutcome::Failed);
}

#[test]
fn xpay_without_its_parameters_is_refused() {
    let receiver = Receiver::new(Dialect::Xpay);
    let none = HeaderMap::new();
    for query in
        [None, Some("state=10"), Some("xrayOperationID=1"), Some("state=x&xrayOperationID=1")]
    {
        let req = Incoming { query, headers: &none, body: b"" };
        assert!(matches!(receiver.receive(&req), Err(ReceiveError::Malformed(_))), "{query:?}");
    }
}

#[test]
fn ws2mpi_parses_and_the_acknowledgement_is_accepted_by_payhook() {
    let s = Setup::new(CoreDialect::Ws2mpi);
    let out = render(&s, Status::Success);
    let receiver = Receiver::new(Dialect::Ws2mpi);
    let cb = receive(&receiver, &out).expect("parses");
    let Callback::Ws2mpi(w) = &cb else { panic!() };
    assert_eq!((w.order_number.as_str(), w.resp_status, w.order_status), ("order-1", 200, Some(2)));
    let answer = cb.answer();
    assert_eq!(answer.status, 200);
    let body = answer.body.expect("an acknowledgement body");
    assert_eq!(body, br#"{"orderNumber":"order-1","applicationStatus":200}"#);
    // The sender's own classifier takes it as delivered.
    let reply =
        Reply { status: 200, request_body: &out.body, retry_after: None, body: &body, now: s.now };
    assert_eq!(CoreDialect::Ws2mpi.classify(&reply), Verdict::Delivered);
}

#[test]
fn ws2mpi_timeout_callback_has_no_order_status_and_garbage_is_refused() {
    let body = payhook_core::dialect::ws2mpi::timeout_body("order-1", "op_1");
    let cb = payhook_receiver::ws2mpi::Ws2mpiCallback::from_body(&body).expect("parses");
    assert_eq!((cb.resp_status, cb.order_status), (408, None));
    for garbage in [
        &b"OK"[..],
        br#"{"orderNumber":"x"}"#,
        br#"{"orderNumber":1,"respStatus":200,"orderId":"o"}"#,
    ] {
        assert!(payhook_receiver::ws2mpi::Ws2mpiCallback::from_body(garbage).is_err());
    }
}

#[test]
fn ecom_plain_valid_and_tampered() {
    let s = Setup::new(CoreDialect::Ecom);
    let out = render(&s, Status::Success);
    let receiver = Receiver::new(Dialect::Ecom).with_secret(&s.secret()).expect("secret");
    let Callback::Ecom(order) = receive(&receiver, &out).expect("valid") else { panic!() };
    assert!(!order.encrypted);
    assert_eq!((order.order_status.as_str(), order.coin_amount), ("SUCCESS", 100_000));
    assert_eq!(order.merchant_request_id, "order-1");
    let tx = order.transaction().expect("a transaction");
    assert_eq!(tx.status.as_deref(), Some("SUCCESS"));
    assert_eq!(tx.transaction_currency.as_deref(), Some("980"));
    assert_eq!(tx.other["rrn"], "428411449064");
    assert_eq!(
        receive(&receiver, &tampered(&out, "SUCCESS", "FAIL")),
        Err(ReceiveError::BadSignature)
    );
}

#[test]
fn ecom_operations_field_is_read_too() {
    let mut s = Setup::new(CoreDialect::Ecom);
    s.merchant.settings.insert("ecom_operations_field".into(), "operations".into());
    let out = render(&s, Status::Pending);
    let receiver = Receiver::new(Dialect::Ecom).with_secret(&s.secret()).expect("secret");
    let Callback::Ecom(order) = receive(&receiver, &out).expect("valid") else { panic!() };
    assert!(order.operation.is_none());
    assert_eq!(order.transaction().and_then(|t| t.status.as_deref()), Some("PENDING"));
}

#[test]
fn ecom_encrypted_decrypts_with_the_private_key() {
    let (s, private) = Setup::encrypting();
    let out = render(&s, Status::Success);
    assert_eq!(out.header("X-Encrypted_Body"), Some("true"));
    let receiver = Receiver::new(Dialect::Ecom)
        .with_secret(&s.secret())
        .and_then(|r| r.with_private_key(&private))
        .expect("secret and key");
    let Callback::Ecom(order) = receive(&receiver, &out).expect("decrypts") else { panic!() };
    assert!(order.encrypted && order.notification_encryption);
    assert_eq!(order.order_status, "SUCCESS");
}

#[test]
fn ecom_encrypted_without_the_right_key_or_tampered_is_refused() {
    let (s, private) = Setup::encrypting();
    let out = render(&s, Status::Success);
    let no_key = Receiver::new(Dialect::Ecom).with_secret(&s.secret()).expect("secret");
    assert_eq!(receive(&no_key, &out), Err(ReceiveError::NoKey));
    let (_, other_private) = Setup::encrypting();
    let wrong = no_key.clone().with_private_key(&other_private).expect("key");
    assert!(matches!(receive(&wrong, &out), Err(ReceiveError::Decrypt(_))));
    // A changed JWE fails the signature; re-signed by someone holding only the secret, it
    // still fails authenticated decryption.
    let right = no_key.with_private_key(&private).expect("key");
    let jwe = String::from_utf8(out.body.clone()).expect("text");
    let mut parts: Vec<String> = jwe.split('.').map(str::to_owned).collect();
    let flip = |c: char| if c == 'A' { 'B' } else { 'A' };
    let first = parts[3].chars().next().expect("ciphertext");
    parts[3] = format!("{}{}", flip(first), &parts[3][1..]);
    let forged = parts.join(".");
    let changed = Outgoing { body: forged.clone().into_bytes(), ..out.clone() };
    assert_eq!(receive(&right, &changed), Err(ReceiveError::BadSignature));
    let resigned = render::resign(&s, &changed);
    assert!(matches!(receive(&right, &resigned), Err(ReceiveError::Decrypt(_))));
}

#[test]
fn ecom_private_key_must_be_private_p384() {
    let (s, _) = Setup::encrypting();
    let public = s.merchant.encryption_key.clone().expect("public key");
    assert!(ecom::PrivateKey::from_jwk(&public).is_err(), "public part only");
    assert!(ecom::PrivateKey::from_jwk(&serde_json::json!({"kty": "oct", "k": "AA"})).is_err());
}

#[test]
fn uapay_valid() {
    let s = Setup::new(CoreDialect::Uapay);
    let out = render(&s, Status::Success);
    let receiver = Receiver::new(Dialect::Uapay).with_secret(&s.secret()).expect("secret");
    let Callback::Uapay(p) = receive(&receiver, &out).expect("valid") else { panic!() };
    assert_eq!((p.status.as_str(), p.payment_status.as_str()), ("FINISHED", "FINISHED"));
    assert_eq!((p.external_id.as_str(), p.amount, p.payment_number), ("order-1", 100_000, 245_786));
    assert_eq!(p.iat, now());
    assert_eq!(p.card_to_masked, None);
    assert!(p.pay_date.is_some());
}

#[test]
fn uapay_tampered_or_wrongly_keyed_is_refused() {
    let s = Setup::new(CoreDialect::Uapay);
    let out = render(&s, Status::Success);
    let body: serde_json::Value = serde_json::from_slice(&out.body).expect("json");
    let token = body["token"].as_str().expect("token");
    let parts: Vec<&str> = token.split('.').collect();
    // Same signature, a payload that says something else.
    let forged_payload = render::b64url(&render::claims_with(token, "amount", 1));
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_eq!(uapay::verify_token(&s.secret(), &forged), Err(ReceiveError::BadSignature));
    assert_eq!(uapay::verify_token("another secret", token), Err(ReceiveError::BadSignature));
    // "alg": "none" with no signature is not HS256.
    let none = format!("{}.{}.", render::b64url(br#"{"alg":"none","typ":"JWT"}"#), parts[1]);
    assert!(matches!(uapay::verify_token(&s.secret(), &none), Err(ReceiveError::BadToken(_))));
    let receiver = Receiver::new(Dialect::Uapay).with_secret(&s.secret()).expect("secret");
    assert!(matches!(
        receive(&receiver, &tampered(&out, "token", "tokn")),
        Err(ReceiveError::Malformed(_))
    ));
}

#[test]
fn signed_dialects_need_a_secret() {
    let s = Setup::new(CoreDialect::Uapay);
    let out = render(&s, Status::Success);
    assert_eq!(receive(&Receiver::new(Dialect::Uapay), &out), Err(ReceiveError::NoSecret));
    assert!(Receiver::new(Dialect::Standard).with_secret("not-whsec").is_err());
}

/// An operator alert of payhook's ops webhook, signed with the ops secret.
fn alert(secret: &SigningSecret, body: &str) -> Outgoing {
    let signature = secret.sign("evt_1", now(), body.as_bytes());
    Outgoing {
        url: "http://ops.example/alerts".into(),
        headers: vec![
            ("webhook-id".into(), "evt_1".into()),
            ("webhook-timestamp".into(), now().to_string()),
            ("webhook-signature".into(), signature),
        ],
        body: body.as_bytes().to_vec(),
        method: payhook_core::dialect::Method::Post,
    }
}

#[test]
fn operator_alerts_are_verified_and_told_apart() {
    let secret = SigningSecret::from_key(&[5u8; 32]);
    let receiver = Receiver::new(Dialect::Standard).with_secret(secret.expose()).expect("secret");
    let body = r#"{"type":"merchant.endpoint_failing","timestamp":"2026-12-07T10:00:00.000Z","data":{"merchant_id":"mer_1","url":"https://shop.example/cb","consecutive_failures":10}}"#;
    let Callback::Alert(a) = receive(&receiver, &alert(&secret, body)).expect("valid") else {
        panic!("an alert")
    };
    assert_eq!(
        (a.webhook_id.as_str(), a.event_type.as_str()),
        ("evt_1", "merchant.endpoint_failing")
    );
    assert_eq!(a.data["consecutive_failures"], 10);
    let forged = tampered(
        &alert(&secret, body),
        "\"consecutive_failures\":10",
        "\"consecutive_failures\":1",
    );
    assert!(matches!(receive(&receiver, &forged), Err(ReceiveError::BadSignature)));
}
