//! The four provider dialects end to end (issue #3): a status report becomes the provider's
//! callback on a real receiver, the acknowledgement rule of each provider is applied, the retry
//! follows the provider's schedule to the millisecond on the manual clock, and the delivery log
//! shows every attempt. ECOM's JWE and UAPAY's JWS, as received, are opened by independent
//! libraries (see `crosscheck`). Also the registration rules the dialects add at the API edge.

use crate::crosscheck::jose_check;
use crate::helpers::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use josekit::jwk::{alg::ec::EcCurve, Jwk};
use payhook_core::clock::Clock;
use payhook_core::Timestamp;
use serde_json::{json, Map, Value};
use std::time::Duration;

fn id_of(v: &Value) -> &str {
    v["id"].as_str().expect("an id")
}

fn now_ms(app: &TestApp) -> i64 {
    app.clock.as_ref().expect("manual clock").now().millis()
}

fn next_at(delivery: &Value) -> Option<i64> {
    let text = delivery["next_attempt_at"].as_str()?;
    Some(Timestamp::parse_rfc3339(text).expect("RFC 3339").millis())
}

async fn only_delivery(app: &TestApp, op: &str) -> Value {
    let list = app.deliveries(op).await;
    assert_eq!(list.len(), 1, "one delivery: {list:?}");
    list[0].clone()
}

/// The first attempt was just made and failed: the delivery waits exactly `delay`. Nothing is
/// due 1 ms before it; the retry is made when it is up.
async fn retry_after_exactly(app: &TestApp, op: &str, delay: Duration) {
    let d = only_delivery(app, op).await;
    assert_eq!(d["state"], "pending", "{d}");
    let delay_ms = i64::try_from(delay.as_millis()).expect("small delay");
    assert_eq!(next_at(&d), Some(now_ms(app) + delay_ms), "retry scheduled {delay:?} later");
    app.advance(delay - Duration::from_millis(1));
    assert_eq!(app.dispatcher.run_once().await, 0, "nothing due 1 ms before {delay:?}");
    app.advance(Duration::from_millis(1));
    assert_eq!(app.dispatcher.run_once().await, 1, "the retry is made after {delay:?}");
}

/// `(response_status, outcome, error_kind)` of each attempt in the delivery log.
fn attempts(delivery: &Value) -> Vec<(Value, Value, Value)> {
    let list = delivery["attempts"].as_array().expect("attempts in the log");
    list.iter()
        .map(|a| (a["response_status"].clone(), a["outcome"].clone(), a["error_kind"].clone()))
        .collect()
}

fn attempt(status: u16, outcome: &str, kind: Option<&str>) -> (Value, Value, Value) {
    (json!(status), json!(outcome), json!(kind))
}

/// Reports `status` and checks that the dialect sends nothing for it.
async fn report_silent(app: &TestApp, op: &str, status: &str, rx: &TestReceiver) {
    assert_eq!(app.report(op, status).await.status, 202);
    assert_eq!(app.dispatcher.run_once().await, 0, "no callback for {status}");
    assert_eq!(app.deliveries(op).await, Vec::<Value>::new(), "no delivery for {status}");
    assert_eq!(rx.received().len(), 0, "nothing reached the merchant for {status}");
}

/// The rest of the time nothing more is sent: the delivery is settled.
async fn nothing_more(app: &TestApp, rx: &TestReceiver, sent: usize) {
    app.advance(Duration::from_secs(48 * 3600));
    assert_eq!(app.dispatcher.run_once().await, 0, "nothing after the acknowledgement");
    assert_eq!(rx.received().len(), sent);
}

fn jwk_json(jwk: &Jwk) -> Value {
    let map: &Map<String, Value> = jwk.as_ref();
    Value::Object(map.clone())
}

fn assert_refused(r: &Resp, code: &str, field: &str) {
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], code, "{:?}", r.body);
    assert_eq!(r.body["error"]["field"], field, "{:?}", r.body);
}

// ---------------------------------------------------------------------------------------------
// ws2mpi

#[tokio::test]
async fn ws2mpi_posts_to_the_merchant_url_and_repeats_until_application_status_200() {
    let app = spawn_app(Mode::Manual).await;
    let rx = TestReceiver::start().await;
    let merchant_url = format!("{}/ws2mpi/callback", rx.url);
    let m = app
        .merchant(json!({"name": "Shop", "dialect": "ws2mpi", "callback_url": merchant_url}))
        .await;
    let op = app.operation(id_of(&m), "order-77", json!({})).await;
    assert_eq!(op["callback_url"], Value::Null, "the operation names no URL of its own");
    let id = id_of(&op);
    report_silent(&app, id, "pending", &rx).await;

    let ack = r#"{"orderNumber":"order-77","applicationStatus":200}"#;
    rx.script(&[(200, r#"{"orderNumber":"order-77","applicationStatus":500}"#)]);
    rx.set_default(200, ack);
    assert_eq!(app.report(id, "success").await.status, 202);
    assert_eq!(app.dispatcher.run_once().await, 1);
    retry_after_exactly(&app, id, Duration::from_secs(30)).await;

    let expect_body = format!(
        r#"{{"orderNumber":"order-77","respStatus":200,"orderStatus":2,"orderId":"{id}"}}"#
    );
    let got = rx.received();
    assert_eq!(got.len(), 2);
    for cb in &got {
        assert_eq!((cb.method.as_str(), cb.uri.as_str()), ("POST", "/ws2mpi/callback"));
        assert_eq!(cb.header("content-type"), "application/json");
        assert!(cb.header("user-agent").starts_with("payhook/"), "{:?}", cb.headers);
        assert_eq!(String::from_utf8_lossy(&cb.body), expect_body, "the seed's four fields");
    }
    let d = only_delivery(&app, id).await;
    assert_eq!((d["state"].as_str(), d["url"].as_str()), (Some("delivered"), Some(&*merchant_url)));
    let log = [attempt(200, "retry", Some("ack_rejected")), attempt(200, "delivered", None)];
    assert_eq!(attempts(&d), log);
    assert_eq!(
        d["attempts"][0]["response_body"],
        r#"{"orderNumber":"order-77","applicationStatus":500}"#
    );
    assert_eq!(d["attempts"][1]["response_body"], ack);
    nothing_more(&app, &rx, 2).await;
}

#[tokio::test]
async fn ws2mpi_order_number_is_at_most_32_characters() {
    let app = spawn_app(Mode::Manual).await;
    let url = "https://shop.example/ws2mpi";
    let m = app.merchant(json!({"name": "Shop", "dialect": "ws2mpi", "callback_url": url})).await;
    let std = app.merchant(json!({"name": "Other", "callback_url": url})).await;
    let register = |merchant: &str, external_id: String, extra: Value| {
        let mut body = json!({"merchant_id": merchant, "external_id": external_id,
            "amount": 100, "currency": "UAH", "kind": "purchase"});
        body.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        app.admin("POST", "/v1/operations", Some(body))
    };
    let (n32, n33) = ("a".repeat(32), "b".repeat(33));
    assert_eq!(register(id_of(&m), n32, json!({})).await.status, 201);
    let r = register(id_of(&m), n33.clone(), json!({})).await;
    assert_refused(&r, "field_too_long", "external_id");
    let find = format!("/v1/operations?merchant_id={}&external_id={n33}", id_of(&m));
    assert_eq!(app.admin("GET", &find, None).await.status, 404, "nothing stored");
    // The limit follows the operation's effective dialect, not the merchant's default.
    let r = register(id_of(&std), n33.clone(), json!({"dialect": "ws2mpi"})).await;
    assert_refused(&r, "field_too_long", "external_id");
    let r = register(id_of(&m), n33.clone(), json!({"dialect": "standard"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    // Characters, not bytes: 32 Cyrillic letters are 64 bytes and fit.
    assert_eq!(register(id_of(&m), "ж".repeat(32), json!({})).await.status, 201);
}

// ---------------------------------------------------------------------------------------------
// xpay

#[tokio::test]
async fn xpay_gets_the_success_and_fail_urls_with_state_and_operation_number() {
    let app = spawn_app(Mode::Manual).await;
    let rx = TestReceiver::start().await;
    let m = app.merchant(json!({"name": "Shop", "dialect": "xpay"})).await;
    let urls = json!({
        "success_url": format!("{}/cb_success?shop=7", rx.url),
        "fail_url": format!("{}/cb_fail", rx.url),
        "return_url": "https://partner.host/resul_page",
    });
    let paid = app.operation(id_of(&m), "order-1", urls.clone()).await;
    let declined = app.operation(id_of(&m), "order-2", urls).await;
    let (paid_no, declined_no) =
        (paid["number"].as_i64().expect("number"), declined["number"].as_i64().expect("number"));
    assert!(declined_no > paid_no, "numbers grow in creation order");
    report_silent(&app, id_of(&paid), "pending", &rx).await;

    rx.script(&[(500, "busy")]);
    assert_eq!(app.report(id_of(&paid), "success").await.status, 202);
    assert_eq!(app.dispatcher.run_once().await, 1);
    retry_after_exactly(&app, id_of(&paid), Duration::from_secs(20)).await;
    let success = format!("/cb_success?shop=7&state=10&xrayOperationID={paid_no}");
    let got = rx.received();
    assert_eq!(got.len(), 2);
    for cb in &got {
        assert_eq!((cb.method.as_str(), cb.uri.as_str()), ("GET", success.as_str()));
        assert!(cb.body.is_empty(), "a bare GET");
        assert_eq!(cb.header("webhook-signature"), "", "no signature in the URL or headers");
    }
    let d = only_delivery(&app, id_of(&paid)).await;
    assert_eq!(d["state"], "delivered");
    assert_eq!(
        attempts(&d),
        [attempt(500, "retry", Some("http_status")), attempt(200, "delivered", None)]
    );
    assert_eq!(d["attempts"][1]["request"], format!("GET {}{success}", rx.url));

    assert_eq!(app.report(id_of(&declined), "failed").await.status, 202);
    assert_eq!(app.dispatcher.run_once().await, 1);
    let got = rx.received();
    assert_eq!(got.len(), 3);
    let fail = format!("/cb_fail?state=21&xrayOperationID={declined_no}");
    assert_eq!((got[2].method.as_str(), got[2].uri.as_str()), ("GET", fail.as_str()));
    let d = only_delivery(&app, id_of(&declined)).await;
    assert_eq!(
        (d["state"].as_str(), attempts(&d)),
        (Some("delivered"), vec![attempt(200, "delivered", None)])
    );
    nothing_more(&app, &rx, 3).await;
}

// ---------------------------------------------------------------------------------------------
// ecom

#[tokio::test]
async fn ecom_posts_the_order_and_only_200_acknowledges() {
    let app = spawn_app(Mode::Manual).await;
    let rx = TestReceiver::start().await;
    let notify = format!("{}/notify", rx.url);
    let m = app.merchant(json!({"name": "Shop", "dialect": "ecom", "callback_url": notify})).await;
    let data = json!({"hppOrderId": "17285584837476oqrSs7PszY",
        "operation": {"type": "PURCHASE", "rrn": "428411449064"}});
    let op = app.operation(id_of(&m), "order-e1", json!({"data": data})).await;
    let id = id_of(&op);

    rx.script(&[(204, "")]);
    assert_eq!(app.report(id, "pending").await.status, 202);
    assert_eq!(app.dispatcher.run_once().await, 1);
    retry_after_exactly(&app, id, Duration::from_secs(5)).await;
    let d = only_delivery(&app, id).await;
    assert_eq!(d["state"], "delivered");
    assert_eq!(
        attempts(&d),
        [attempt(204, "retry", Some("http_status")), attempt(200, "delivered", None)]
    );

    let got = rx.received();
    assert_eq!(got.len(), 2);
    let wh = standardwebhooks::Webhook::new(m["signing_secret"].as_str().expect("secret"))
        .expect("secret parses");
    for cb in &got {
        assert_eq!((cb.method.as_str(), cb.uri.as_str()), ("POST", "/notify"));
        assert_eq!(cb.header("content-type"), "application/json");
        assert_eq!(cb.header("x-encrypted_body"), "", "not encrypted");
        assert_eq!(cb.header("webhook-id"), id_of(&d), "the delivery id on every attempt");
        check_signature(&wh, cb);
        let body = cb.json();
        assert_eq!(body["ecomOrderId"], id, "payhook's id when ALB's is not in data");
        assert_eq!(body["coinAmount"], 12_345);
        assert_eq!(body["hppOrderId"], "17285584837476oqrSs7PszY");
        assert_eq!(body["notificationUrl"], notify.as_str());
        assert_eq!(body["notificationEncryption"], false);
        assert_eq!(body["merchantRequestId"], "order-e1");
        assert_eq!(body["orderStatus"], "PENDING");
        let tx = &body["operation"];
        assert_eq!((&tx["status"], &tx["rrn"]), (&json!("PENDING"), &json!("428411449064")));
        assert_eq!(tx["transactionCurrency"], "980");
    }

    assert_eq!(app.report(id, "success").await.status, 202);
    assert_eq!(app.dispatcher.run_once().await, 1, "every status change after created");
    let got = rx.received();
    assert_eq!((got.len(), &got[2].json()["orderStatus"]), (3, &json!("SUCCESS")));
    nothing_more(&app, &rx, 3).await;
}

/// The signature the official Standard Webhooks library computes for the callback as received
/// is among those sent. (`Webhook::verify` would also check the timestamp against the wall
/// clock, which the manual clock is far from.)
fn check_signature(wh: &standardwebhooks::Webhook, cb: &Received) {
    let ts: i64 = cb.header("webhook-timestamp").parse().expect("unix seconds");
    let expect = wh.sign(cb.header("webhook-id"), ts, &cb.body).expect("signs");
    let sent: Vec<&str> = cb.header("webhook-signature").split(' ').collect();
    assert!(sent.contains(&expect.as_str()), "{expect} not in {sent:?}");
}

#[tokio::test]
async fn ecom_encrypted_callback_is_a_jwe_that_jwcrypto_decrypts() {
    let app = spawn_app(Mode::Manual).await;
    let rx = TestReceiver::start().await;
    let notify = format!("{}/notify", rx.url);
    let keyless =
        app.merchant(json!({"name": "No key", "dialect": "ecom", "callback_url": notify})).await;
    let body = json!({"merchant_id": id_of(&keyless), "external_id": "order-x", "amount": 100,
        "currency": "UAH", "kind": "purchase", "encrypt": true});
    let r = app.admin("POST", "/v1/operations", Some(body)).await;
    assert_refused(&r, "encryption_key_missing", "encrypt");

    let private = Jwk::generate_ec_key(EcCurve::P384).expect("a P-384 key pair");
    let public = jwk_json(&private.to_public_key().expect("the public half"));
    let m = app
        .merchant(json!({"name": "Shop", "dialect": "ecom", "callback_url": notify,
            "encryption_key": public}))
        .await;
    assert_eq!(m["has_encryption_key"], true);
    let op = app.operation(id_of(&m), "order-enc", json!({"encrypt": true})).await;
    let id = id_of(&op);
    assert_eq!(app.report(id, "success").await.status, 202);
    assert_eq!(app.dispatcher.run_once().await, 1);
    assert_eq!(only_delivery(&app, id).await["state"], "delivered");

    let got = rx.received();
    assert_eq!(got.len(), 1);
    let cb = &got[0];
    assert_eq!((cb.method.as_str(), cb.uri.as_str()), ("POST", "/notify"));
    assert_eq!(cb.header("content-type"), "text/plain");
    assert_eq!(cb.header("x-encrypted_body"), "true");
    let wh = standardwebhooks::Webhook::new(m["signing_secret"].as_str().expect("secret"))
        .expect("secret parses");
    check_signature(&wh, cb);
    let token = std::str::from_utf8(&cb.body).expect("a compact JWE is text");
    let segments: Vec<&str> = token.split('.').collect();
    assert_eq!(segments.len(), 5, "compact serialization: {token}");
    let header: Value =
        serde_json::from_slice(&B64URL.decode(segments[0]).expect("base64url")).expect("JSON");
    assert_eq!((&header["alg"], &header["enc"]), (&json!("ECDH-ES+A256KW"), &json!("A256GCM")));
    assert_eq!(header["epk"]["crv"], "P-384");

    let job = json!({"kind": "jwe", "private_jwk": jwk_json(&private), "token": token});
    let order = jose_check(job).await.expect("jwcrypto decrypts payhook's JWE");
    assert_eq!(order["orderStatus"], "SUCCESS");
    assert_eq!(order["notificationEncryption"], true);
    assert_eq!(order["merchantRequestId"], "order-enc");
    assert_eq!(order["coinAmount"], 12_345);
    assert_eq!(order["notificationUrl"], notify.as_str());
    assert_eq!(order["operation"]["status"], "SUCCESS");

    let stranger = Jwk::generate_ec_key(EcCurve::P384).expect("another key pair");
    let job = json!({"kind": "jwe", "private_jwk": jwk_json(&stranger), "token": token});
    assert!(jose_check(job).await.is_err(), "another key cannot decrypt it");
}

#[tokio::test]
async fn merchant_encryption_key_must_be_a_public_p384_jwk() {
    let app = spawn_app(Mode::Manual).await;
    let private = Jwk::generate_ec_key(EcCurve::P384).expect("key");
    let public = jwk_json(&private.to_public_key().expect("public"));
    let p256 = Jwk::generate_ec_key(EcCurve::P256).expect("key");
    let mut short_x = public.clone();
    short_x["x"] = json!(B64URL.encode([7u8; 32]));
    let mut no_y = public.clone();
    no_y.as_object_mut().expect("object").remove("y");
    let mut off_curve = public.clone();
    off_curve["y"] = json!(B64URL.encode([1u8; 48]));
    let bad = [
        ("private key", jwk_json(&private)),
        ("P-256", jwk_json(&p256.to_public_key().expect("public"))),
        ("RSA", json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"})),
        ("not an object", json!("-----BEGIN PUBLIC KEY-----")),
        ("short x", short_x),
        ("no y", no_y),
        ("off the curve", off_curve),
    ];
    for (what, key) in &bad {
        let body = json!({"name": "Shop", "dialect": "ecom", "encryption_key": key});
        let r = app.admin("POST", "/v1/merchants", Some(body)).await;
        assert_eq!(r.status, 422, "{what}: {:?}", r.body);
        assert_refused(&r, "invalid_encryption_key", "encryption_key");
    }
    let m =
        app.merchant(json!({"name": "Shop", "dialect": "ecom", "encryption_key": public})).await;
    let path = format!("/v1/merchants/{}", id_of(&m));
    for (what, key) in &bad {
        let r = app.admin("PATCH", &path, Some(json!({"encryption_key": key}))).await;
        assert_eq!(r.status, 422, "patch with {what}: {:?}", r.body);
        assert_refused(&r, "invalid_encryption_key", "encryption_key");
    }
    let r = app.admin("GET", &path, None).await;
    assert_eq!(r.body["has_encryption_key"], true, "the public key is still in place");
    let r = app.admin("PATCH", &path, Some(json!({"encryption_key": null}))).await;
    assert_eq!((r.status, &r.body["has_encryption_key"]), (200, &json!(false)));
}

// ---------------------------------------------------------------------------------------------
// uapay

#[tokio::test]
async fn uapay_posts_a_jws_that_pyjwt_verifies_and_only_200_acknowledges() {
    let app = spawn_app(Mode::Manual).await;
    let rx = TestReceiver::start().await;
    let callback = format!("{}/uapay/callback", rx.url);
    let m = app
        .merchant(json!({"name": "Shop", "dialect": "uapay",
            "allowed_callback_urls": [format!("{}/uapay/", rx.url)]}))
        .await;
    let secret = m["signing_secret"].as_str().expect("secret");
    let data = json!({"cardFromMasked": "4111111111", "receiptPath": "https://r.example/1.pdf"});
    let op =
        app.operation(id_of(&m), "order-u1", json!({"callback_url": callback, "data": data})).await;
    let (id, number) = (id_of(&op), op["number"].as_i64().expect("number"));

    rx.script(&[(201, "")]);
    assert_eq!(app.report(id, "success").await.status, 202);
    let first_iat = now_ms(&app) / 1000;
    assert_eq!(app.dispatcher.run_once().await, 1);
    retry_after_exactly(&app, id, Duration::from_secs(5)).await;
    let d = only_delivery(&app, id).await;
    assert_eq!(d["state"], "delivered");
    assert_eq!(
        attempts(&d),
        [attempt(201, "retry", Some("http_status")), attempt(200, "delivered", None)]
    );

    let got = rx.received();
    assert_eq!(got.len(), 2);
    let mut tokens = Vec::new();
    for (i, cb) in got.iter().enumerate() {
        assert_eq!((cb.method.as_str(), cb.uri.as_str()), ("POST", "/uapay/callback"));
        assert_eq!(cb.header("content-type"), "application/json");
        let body = cb.json();
        let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["token"], "the seed's body: only the token");
        let token = body["token"].as_str().expect("token").to_owned();
        let job = json!({"kind": "jws", "key": secret, "token": token});
        let claims = jose_check(job).await.expect("PyJWT verifies payhook's JWS");
        assert_eq!(claims["externalId"], "order-u1");
        assert_eq!((&claims["paymentId"], &claims["invoiceId"]), (&json!(id), &json!(id)));
        assert_eq!(claims["paymentNumber"], number);
        assert_eq!((&claims["amount"], &claims["reversalAmount"]), (&json!(12_345), &json!(0)));
        assert_eq!(
            (&claims["status"], &claims["paymentStatus"]),
            (&json!("FINISHED"), &json!("FINISHED"))
        );
        assert_eq!((&claims["type"], &claims["systemType"]), (&json!("PAY"), &json!("ECOM")));
        assert_eq!(claims["cardFromMasked"], "4111111111");
        assert_eq!(claims["cardToMasked"], Value::Null);
        assert_eq!(claims["receiptPath"], "https://r.example/1.pdf");
        assert_eq!(claims["iat"], first_iat + 5 * i as i64, "signed afresh on every attempt");
        tokens.push(token);
    }
    assert_ne!(tokens[0], tokens[1]);
    let job = json!({"kind": "jws", "key": format!("{secret}x"), "token": tokens[0]});
    assert!(jose_check(job).await.is_err(), "another key does not verify it");
    nothing_more(&app, &rx, 2).await;
}

#[tokio::test]
async fn uapay_delivers_only_to_approved_urls() {
    let app = spawn_app(Mode::Manual).await;
    let r =
        app.admin("POST", "/v1/merchants", Some(json!({"name": "Shop", "dialect": "uapay"}))).await;
    assert_refused(&r, "allowed_callback_urls_required", "allowed_callback_urls");

    let m = app
        .merchant(json!({"name": "Shop", "dialect": "uapay",
            "allowed_callback_urls": ["https://shop.example/uapay/"]}))
        .await;
    let register = |external_id: &str, callback_url: &str| {
        let body = json!({"merchant_id": id_of(&m), "external_id": external_id, "amount": 100,
            "currency": "UAH", "kind": "purchase", "callback_url": callback_url});
        app.admin("POST", "/v1/operations", Some(body))
    };
    for (i, url) in [
        "https://shop.example/other",
        "https://evil.example/uapay/",
        "http://shop.example/uapay/cb",
    ]
    .into_iter()
    .enumerate()
    {
        let r = register(&format!("refused-{i}"), url).await;
        assert_refused(&r, "callback_url_not_allowed", "callback_url");
        let find = format!("/v1/operations?merchant_id={}&external_id=refused-{i}", id_of(&m));
        assert_eq!(app.admin("GET", &find, None).await.status, 404, "nothing stored for {url}");
    }
    assert_eq!(register("ok", "https://shop.example/uapay/cb").await.status, 201);
    // Neither the operation nor the merchant names a URL: nothing to check against the list.
    let body = json!({"merchant_id": id_of(&m), "external_id": "no-url", "amount": 100,
        "currency": "UAH", "kind": "purchase"});
    let r = app.admin("POST", "/v1/operations", Some(body)).await;
    assert_refused(&r, "callback_url_required", "callback_url");
}

/// Regression: the allow-list compared raw string prefixes, so an approved
/// `https://shop.example` also approved `https://shop.example.evil.net` and
/// `https://shop.example@evil.net`. A prefix that ends inside the host now ends at its edge.
#[tokio::test]
async fn an_approved_host_does_not_approve_hosts_that_merely_start_like_it() {
    let app = spawn_app(Mode::Manual).await;
    let m = app
        .merchant(json!({"name": "Shop", "dialect": "uapay",
            "allowed_callback_urls": ["https://shop.example"]}))
        .await;
    let register = |external_id: &str, callback_url: &str| {
        let body = json!({"merchant_id": id_of(&m), "external_id": external_id, "amount": 100,
            "currency": "UAH", "kind": "purchase", "callback_url": callback_url});
        app.admin("POST", "/v1/operations", Some(body))
    };
    for (i, url) in [
        "https://shop.example.evil.net/cb",
        "https://shop.example:8443/cb",
        "https://shop.examples/cb",
    ]
    .into_iter()
    .enumerate()
    {
        let r = register(&format!("refused-{i}"), url).await;
        assert_refused(&r, "callback_url_not_allowed", "callback_url");
    }
    // A URL with userinfo is refused before any allow-list is consulted, and never echoed.
    let r = register("refused-userinfo", "https://shop.example@evil.net/cb").await;
    assert_refused(&r, "invalid_url", "callback_url");
    for (i, url) in ["https://shop.example", "https://shop.example/cb", "https://shop.example?x=1"]
        .into_iter()
        .enumerate()
    {
        let r = register(&format!("ok-{i}"), url).await;
        assert_eq!(r.status, 201, "{url}: {:?}", r.body);
    }
}

/// SPEC guarantee 5 for UAPAY's approved URLs: a URL the merchant withdrew from the list after
/// registration receives nothing; the delivery fails permanently with `blocked_target`.
#[tokio::test]
async fn a_url_withdrawn_from_the_allow_list_receives_nothing() {
    let app = spawn_app(Mode::Manual).await;
    let rx = TestReceiver::start().await;
    let m = app
        .merchant(json!({"name": "Shop", "dialect": "uapay",
            "allowed_callback_urls": [format!("{}/uapay/", rx.url)]}))
        .await;
    let callback = format!("{}/uapay/callback", rx.url);
    let op = app.operation(id_of(&m), "order-w", json!({"callback_url": callback})).await;
    let id = id_of(&op);
    let path = format!("/v1/merchants/{}", id_of(&m));
    let patch = json!({"allowed_callback_urls": ["https://shop.example/uapay/"]});
    assert_eq!(app.admin("PATCH", &path, Some(patch)).await.status, 200);

    assert_eq!(app.report(id, "success").await.status, 202);
    assert_eq!(app.dispatcher.run_once().await, 1);
    let d = only_delivery(&app, id).await;
    assert_eq!(d["state"], "cancelled", "{d}");
    assert_eq!(attempts(&d), [(Value::Null, json!("permanent"), json!("blocked_target"))]);
    nothing_more(&app, &rx, 0).await;
}
