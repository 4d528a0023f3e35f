//! The everyday tools (issue #8): `payhook listen` answering each dialect as payhook expects,
//! `payhook demo` walking every dialect, `/metrics` after a delivery, and the dashboard's
//! list/stats endpoints.

use crate::helpers::*;
use josekit::jwk::{alg::ec::EcCurve, Jwk};
use payhook::listen::{ListenArgs, ListenState};
use payhook_core::signing::SigningSecret;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn args(
    dialect: &str,
    secret: Option<&str>,
    key: Option<String>,
    respond: Option<u16>,
) -> ListenArgs {
    ListenArgs { port: 0, dialect: dialect.into(), secret: secret.map(str::to_owned), key, respond }
}

/// A bound loopback port for a `payhook listen` started later (once the secret is known).
struct Listen {
    url: String,
    listener: Option<tokio::net::TcpListener>,
    shutdown: CancellationToken,
}

impl Listen {
    async fn bind() -> Listen {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        Listen { url, listener: Some(listener), shutdown: CancellationToken::new() }
    }

    fn start(&mut self, args: &ListenArgs) {
        let state = Arc::new(ListenState::from_args(args).expect("valid listen flags"));
        let listener = self.listener.take().expect("started once");
        tokio::spawn(payhook::listen::serve(listener, state, self.shutdown.clone()));
    }
}

impl Drop for Listen {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn p384() -> (Value, String) {
    let private = Jwk::generate_ec_key(EcCurve::P384).expect("key");
    let public = private.to_public_key().expect("public");
    let as_value = |jwk: &Jwk| {
        let map: &Map<String, Value> = jwk.as_ref();
        Value::Object(map.clone())
    };
    (as_value(&public), as_value(&private).to_string())
}

/// payhook → `payhook listen --dialect D`: every callback is delivered on the first attempt,
/// which shows listen verified it and answered what the dialect's classifier accepts.
async fn delivered_through_listen(dialect: &str) -> Vec<Value> {
    let app = spawn_app(Mode::Live).await;
    let mut listen = Listen::bind().await;
    let url = format!("{}/{dialect}", listen.url);
    let (public, private) = p384();
    let mut merchant = json!({"name": "listen", "dialect": dialect, "callback_url": url});
    let mut extra = json!({});
    match dialect {
        "uapay" => merchant["allowed_callback_urls"] = json!([url]),
        "ecom" => {
            merchant["encryption_key"] = public;
            extra = json!({"encrypt": true});
        }
        "xpay" => {
            extra = json!({"success_url": format!("{url}/ok"), "fail_url": format!("{url}/fail")})
        }
        _ => {}
    }
    let m = app.merchant(merchant).await;
    let secret = m["signing_secret"].as_str().expect("secret");
    let key = (dialect == "ecom").then_some(private);
    listen.start(&args(dialect, Some(secret), key, None));
    let op = app.operation(m["id"].as_str().expect("id"), "order-1", extra).await;
    let op = op["id"].as_str().expect("op id");
    let pending = app.report(op, "pending").await;
    assert_eq!(pending.status, 202);
    if !pending.body["delivery_id"].is_null() {
        // Let `pending` go out first: reported back to back, it would rightly be superseded.
        app.settled(op).await;
    }
    assert_eq!(app.report(op, "success").await.status, 202);
    let list = app.settled(op).await;
    for d in &list {
        assert_eq!(d["state"], "delivered", "{dialect}: {d}");
        assert_eq!(d["attempts"].as_array().map(Vec::len), Some(1), "{dialect}: first try: {d}");
        assert_eq!(d["attempts"][0]["response_status"], 200, "{dialect}: {d}");
    }
    list
}

#[tokio::test]
async fn listen_answers_standard_xpay_and_uapay_with_200() {
    for dialect in ["standard", "xpay", "uapay"] {
        assert!(!delivered_through_listen(dialect).await.is_empty());
    }
}

#[tokio::test]
async fn listen_decrypts_ecom_and_answers_200() {
    let list = delivered_through_listen("ecom").await;
    assert_eq!(list.len(), 2, "pending and success");
}

#[tokio::test]
async fn listen_acknowledges_ws2mpi_in_the_body() {
    let list = delivered_through_listen("ws2mpi").await;
    let body = list[0]["attempts"][0]["response_body"].as_str().expect("answer body");
    let ack: Value = serde_json::from_str(body).expect("JSON acknowledgement");
    assert_eq!(ack, json!({"orderNumber": "order-1", "applicationStatus": 200}));
}

/// A Standard Webhooks request signed with `secret` now.
fn signed(
    http: &reqwest::Client,
    url: &str,
    secret: &SigningSecret,
    body: &str,
) -> reqwest::RequestBuilder {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    http.post(url)
        .header("webhook-id", "dlv_1")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", secret.sign("dlv_1", ts, body.as_bytes()))
        .body(body.to_owned())
}

const STANDARD_BODY: &str = r#"{"type":"operation.status_changed","timestamp":"2024-01-01T00:00:00.000Z","data":{"id":"op_1","number":1,"merchant_id":"mer_1","external_id":"o","amount":1,"currency":"UAH","kind":"purchase","status":"success","previous_status":"pending","seq":1,"data":{}}}"#;

#[tokio::test]
async fn listen_refuses_a_tampered_callback_with_401() {
    let secret = SigningSecret::from_key(&[5; 32]);
    let mut listen = Listen::bind().await;
    listen.start(&args("standard", Some(secret.expose()), None, None));
    let http = reqwest::Client::new();
    let ok = signed(&http, &listen.url, &secret, STANDARD_BODY).send().await.expect("answer");
    assert_eq!(ok.status(), 200);
    let tampered = signed(&http, &listen.url, &secret, STANDARD_BODY)
        .body(STANDARD_BODY.replace("\"amount\":1", "\"amount\":2"))
        .send()
        .await
        .expect("answer");
    assert_eq!(tampered.status(), 401);
}

#[tokio::test]
async fn listen_respond_overrides_the_status() {
    let secret = SigningSecret::from_key(&[5; 32]);
    let mut standard = Listen::bind().await;
    standard.start(&args("standard", Some(secret.expose()), None, Some(503)));
    let http = reqwest::Client::new();
    let r = signed(&http, &standard.url, &secret, STANDARD_BODY).send().await.expect("answer");
    assert_eq!(r.status(), 503);
    let mut ws2mpi = Listen::bind().await;
    ws2mpi.start(&args("ws2mpi", None, None, Some(500)));
    let body = r#"{"orderNumber":"o-7","respStatus":200,"orderStatus":2,"orderId":"op_1"}"#;
    let r = http.post(&ws2mpi.url).body(body).send().await.expect("answer");
    assert_eq!(r.status(), 500);
    let ack: Value = r.json().await.expect("still the acknowledgement body");
    assert_eq!(ack["orderNumber"], "o-7");
}

#[tokio::test]
async fn listen_refuses_bad_flags() {
    assert!(ListenState::from_args(&args("alb", None, None, None)).is_err(), "unknown dialect");
    assert!(ListenState::from_args(&args("standard", Some("nope"), None, None)).is_err());
    let (public, _) = p384();
    let key = Some(public.to_string());
    assert!(ListenState::from_args(&args("ecom", None, key, None)).is_err(), "public key");
}

/// The value of the sample of `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let rest = series.strip_prefix(name)?;
        let bare = rest.is_empty() && labels.is_empty();
        let labelled = rest.starts_with('{') && labels.iter().all(|l| rest.contains(l));
        (bare || labelled).then(|| value.parse().ok()).flatten()
    })
}

#[tokio::test]
async fn metrics_show_deliveries_latency_backlog_and_requests() {
    let app = spawn_app(Mode::Manual).await;
    let receiver = TestReceiver::start().await;
    let m =
        app.merchant(json!({"name": "m", "callback_url": format!("{}/cb", receiver.url)})).await;
    let mid = m["id"].as_str().expect("id");
    let delivered = app.operation(mid, "metrics-1", json!({})).await;
    app.report(delivered["id"].as_str().expect("id"), "success").await;
    assert_eq!(app.dispatcher.run_once().await, 1);
    let waiting = app.operation(mid, "metrics-2", json!({})).await;
    app.report(waiting["id"].as_str().expect("id"), "success").await;
    app.advance(Duration::from_secs(90));

    let resp = app.http.get(format!("{}/metrics", app.base)).send().await.expect("scrape");
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = resp.text().await.expect("text");
    let std = r#"dialect="standard""#;
    let attempts =
        sample(&text, "payhook_delivery_attempts_total", &[std, r#"outcome="delivered""#]);
    assert!(attempts >= Some(1.0), "attempts counter: {text}");
    let ended = sample(&text, "payhook_deliveries_total", &[std, r#"state="delivered""#]);
    assert!(ended >= Some(1.0), "deliveries counter: {text}");
    let claimed = sample(&text, "payhook_delivery_attempts_started_total", &[r#"via="claim""#]);
    assert!(claimed >= Some(1.0), "attempts started by a claim (run_once): {text}");
    let latency = sample(&text, "payhook_delivery_attempt_duration_seconds_count", &[std]);
    assert!(latency >= Some(1.0), "latency histogram: {text}");
    assert!(text.contains("payhook_delivery_attempt_duration_seconds_bucket{"), "{text}");
    assert_eq!(sample(&text, "payhook_deliveries_pending", &[]), Some(1.0), "{text}");
    assert_eq!(sample(&text, "payhook_oldest_pending_delivery_age_seconds", &[]), Some(90.0));
    let reports = [r#"route="/v1/operations/{id}/status""#, r#"method="POST""#, r#"status="202""#];
    assert!(sample(&text, "payhook_api_requests_total", &reports) >= Some(2.0), "{text}");
    assert!(!text.contains("route=\"/v1/operations/op_"), "raw paths never become labels");
}

fn id(v: &Value) -> &str {
    v["id"].as_str().expect("an id")
}

#[tokio::test]
async fn dashboard_endpoints_list_operations_events_and_stats() {
    let app = spawn_app(Mode::Live).await;
    let receiver = TestReceiver::start().await;
    let cb = format!("{}/cb", receiver.url);
    let a = app.merchant(json!({"name": "Shop A", "callback_url": cb})).await;
    let b = app.merchant(json!({"name": "Shop B", "callback_url": cb})).await;
    let a1 = app.operation(id(&a), "a-1", json!({})).await;
    app.operation(id(&a), "a-2", json!({})).await;
    let b1 = app.operation(id(&b), "b-1", json!({})).await;
    assert_eq!(app.report(id(&a1), "success").await.status, 202);

    let page = app.admin("GET", "/v1/operations?limit=2", None).await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    let ids = |r: &Resp| {
        r.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|o| o["external_id"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&page), [json!("a-1"), json!("a-2")]);
    let after = page.body["next_after"].as_i64().expect("cursor");
    let rest = app.admin("GET", &format!("/v1/operations?limit=2&after={after}"), None).await;
    assert_eq!(ids(&rest), [json!("b-1")]);
    let only_b = app.admin("GET", &format!("/v1/operations?merchant_id={}", id(&b)), None).await;
    assert_eq!(ids(&only_b), [json!("b-1")]);
    let key = a["api_key"].as_str().expect("api key");
    let own = app.call("GET", "/v1/operations", Some(key), None).await;
    assert_eq!(ids(&own), [json!("a-1"), json!("a-2")]);
    let other =
        app.call("GET", &format!("/v1/operations?merchant_id={}", id(&b)), Some(key), None).await;
    assert_eq!(other.status, 403);
    assert_eq!(app.admin("GET", "/v1/operations?limit=0", None).await.status, 422);

    let events = app.admin("GET", &format!("/v1/operations/{}/events", id(&a1)), None).await;
    let statuses: Vec<_> = events.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| (e["seq"].clone(), e["status"].clone()))
        .collect();
    assert_eq!(statuses, [(json!(0), json!("created")), (json!(1), json!("success"))]);
    let foreign =
        app.call("GET", &format!("/v1/operations/{}/events", id(&b1)), Some(key), None).await;
    assert_eq!(foreign.status, 403);

    app.settled(id(&a1)).await;
    let stats = app.admin("GET", "/v1/stats/deliveries", None).await;
    let rows = stats.body["data"].as_array().expect("data");
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (&rows[0]["merchant_name"], &rows[0]["delivered"], &rows[0]["success_rate"]),
        (&json!("Shop A"), &json!(1), &json!(1.0))
    );
    assert_eq!((&rows[1]["pending"], &rows[1]["success_rate"]), (&json!(0), &Value::Null));
    assert_eq!(app.call("GET", "/v1/stats/deliveries", Some(key), None).await.status, 403);

    let page = app.http.get(format!("{}/ui", app.base)).send().await.expect("ui");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("html").contains("<script src=\"/ui/app.js\">"));
    let js = app.http.get(format!("{}/ui/app.js", app.base)).send().await.expect("js");
    assert!(js.text().await.expect("js").contains("/v1/deliveries/"));
}

#[tokio::test]
async fn demo_walks_every_dialect_and_exits_0() {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_payhook"))
        .args(["demo", "--exit-after-walkthrough", "--port", "0", "--timeout", "20s"])
        .env("RUST_BACKTRACE", "0")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .expect("the demo finishes within a minute")
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {:?}\n{stdout}\n{stderr}", out.status);
    for dialect in ["standard", "xpay", "ws2mpi", "ecom", "uapay"] {
        let line = format!("✔ {dialect:<8} ");
        assert!(stdout.contains(&line), "no {line:?} in:\n{stdout}");
        assert!(stdout.contains(&format!("[{dialect}]")), "{dialect} callback printed");
    }
    assert!(stdout.contains("body decrypted (JWE)") && stdout.contains("valid (HS256)"));
    assert!(stdout.contains("/ui") && stdout.contains("admin token: demo_"), "{stdout}");
    assert!(!stdout.contains("INVALID"), "{stdout}");
}
