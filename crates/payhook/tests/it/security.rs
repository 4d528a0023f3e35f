//! Security end to end (issue #7): the SSRF guard on real deliveries and polls, the access
//! matrix, and bad input that must store nothing.

use crate::helpers::*;
use serde_json::{json, Value};
use std::time::Duration;

fn id_of(v: &Value) -> &str {
    v["id"].as_str().expect("an id")
}

/// `http://loopback.test:<port>`: a host name (so the resolver decides, after registration
/// let it through) that resolves to a loopback address only.
fn via_localhost(rx: &TestReceiver) -> String {
    via_name(rx, "loopback.test")
}

/// Registers an operation whose callback goes to `url`, reports `success` and makes one
/// dispatch round; returns the settled delivery.
async fn deliver_once(app: &TestApp, url: &str) -> Value {
    let m = app.merchant(json!({"name": "Shop", "callback_url": url})).await;
    let op = app.operation(id_of(&m), "ssrf-1", json!({})).await;
    assert_eq!(app.report(id_of(&op), "success").await.status, 202);
    assert_eq!(app.dispatcher.run_once().await, 1);
    let list = app.deliveries(id_of(&op)).await;
    assert_eq!(list.len(), 1, "{list:?}");
    list[0].clone()
}

#[tokio::test]
async fn a_host_name_resolving_to_loopback_is_refused_after_dns() {
    let app = spawn_app_with(Mode::Manual, |c| c.allow_private_targets = false).await;
    let rx = TestReceiver::start().await;
    let d = deliver_once(&app, &format!("{}/cb", via_localhost(&rx))).await;
    assert_eq!(d["state"], "cancelled", "{d}");
    let attempt = &d["attempts"][0];
    assert_eq!(attempt["error_kind"], "blocked_target", "{attempt}");
    assert_eq!(attempt["outcome"], "permanent");
    let why = attempt["error"].as_str().expect("a reason");
    assert!(why.contains("127.0.0.1") && why.contains("loopback"), "{why}");
    assert_eq!(rx.received().len(), 0, "nothing reached the loopback receiver");
}

#[tokio::test]
async fn names_resolving_to_loopback_metadata_and_mapped_forms_are_refused_after_dns() {
    let app = spawn_app_with(Mode::Manual, |c| c.allow_private_targets = false).await;
    let rx = TestReceiver::start().await;
    let port = rx.url.rsplit(':').next().expect("port").to_owned();
    for (i, url) in [
        format!("http://loopback.test:{port}/cb"),
        format!("http://mapped.test:{port}/cb"),
        format!("http://v6loopback.test:{port}/cb"),
        "http://metadata.test/latest/meta-data/".to_owned(),
    ]
    .iter()
    .enumerate()
    {
        let m = app.merchant(json!({"name": "Shop", "callback_url": url})).await;
        let op = app.operation(id_of(&m), &format!("lit-{i}"), json!({})).await;
        assert_eq!(app.report(id_of(&op), "success").await.status, 202);
        app.dispatcher.run_once().await;
        let d = &app.deliveries(id_of(&op)).await[0];
        assert_eq!(
            (d["state"].as_str(), d["attempts"][0]["error_kind"].as_str()),
            (Some("cancelled"), Some("blocked_target")),
            "{url}: {d}"
        );
    }
    assert_eq!(rx.received().len(), 0);
}

#[tokio::test]
async fn the_operator_allow_list_opens_exactly_its_ranges() {
    let app = spawn_app_with(Mode::Manual, |c| {
        c.allow_private_targets = false;
        c.allow_cidrs = vec!["127.0.0.0/8".parse().expect("cidr")];
    })
    .await;
    let rx = TestReceiver::start().await;
    // localhost resolves to 127.0.0.1 (allowed by the list) and perhaps ::1 (still refused):
    // the connection goes to the address that passed.
    let d = deliver_once(&app, &format!("{}/cb", via_localhost(&rx))).await;
    assert_eq!(d["state"], "delivered", "{d}");
    assert_eq!(rx.received().len(), 1);
}

#[tokio::test]
async fn https_only_refuses_http_callbacks() {
    let app = spawn_app_with(Mode::Manual, |c| c.https_only = true).await;
    let rx = TestReceiver::start().await;
    // Registration refuses an http:// callback URL at once...
    let r = app
        .admin("POST", "/v1/merchants", Some(json!({"name": "Shop", "callback_url": rx.url})))
        .await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (422, Some("blocked_target")));
    assert!(r.body["error"]["message"].as_str().is_some_and(|e| e.contains("https_only")));
    let source = json!({"url": format!("{}/status", rx.url), "schedule": ["1s"]});
    let m = app.merchant(json!({"name": "Shop", "callback_url": "https://shop.example/cb"})).await;
    let body = json!({"merchant_id": id_of(&m), "external_id": "o-1", "amount": 1,
        "currency": "UAH", "kind": "purchase", "status_source": source});
    let r = app.admin("POST", "/v1/operations", Some(body)).await;
    assert_eq!((r.status, r.body["error"]["field"].as_str()), (422, Some("status_source")));
    assert_eq!(rx.received().len(), 0);
}

#[tokio::test]
async fn status_sources_go_through_the_same_guard() {
    let app = spawn_app_with(Mode::Manual, |c| c.allow_private_targets = false).await;
    let source = TestReceiver::start().await;
    source.set_default(200, r#"{"orderStatus":2}"#);
    let m = app.merchant(json!({"name": "Shop", "callback_url": "https://shop.example/cb"})).await;
    let op = app
        .operation(
            id_of(&m),
            "watched-1",
            json!({"status_source": {"url": format!("{}/status", via_localhost(&source)),
                "schedule": ["1s"]}}),
        )
        .await;
    app.advance(Duration::from_secs(1));
    assert_eq!(app.watchdog.run_once().await, 1);
    let log = app.admin("GET", &format!("/v1/operations/{}/polls", id_of(&op)), None).await;
    let poll = &log.body["data"][0];
    assert_eq!(
        (poll["outcome"].as_str(), poll["error_kind"].as_str()),
        (Some("failed"), Some("blocked_target")),
        "{poll}"
    );
    assert_eq!(source.received().len(), 0, "the status source on loopback was never asked");
}

/// The merchant allow-list at registration compares normalized URLs: host case and default
/// ports do not matter, `..` segments cannot climb out of an approved path, and a URL removed
/// by PATCH is refused from then on.
#[tokio::test]
async fn the_allow_list_compares_urls_as_the_sender_will_see_them() {
    let app = spawn_app(Mode::Manual).await;
    let m = app
        .merchant(json!({"name": "Shop", "dialect": "uapay",
            "allowed_callback_urls": ["https://Shop.Example/uapay/", "https://old.example/cb/"]}))
        .await;
    let mid = id_of(&m).to_owned();
    let register = |external_id: String, callback_url: &str| {
        let body = json!({"merchant_id": mid, "external_id": external_id, "amount": 100,
            "currency": "UAH", "kind": "purchase", "callback_url": callback_url});
        app.admin("POST", "/v1/operations", Some(body))
    };
    for (i, url) in ["https://SHOP.example/uapay/cb", "https://shop.example:443/uapay/x"]
        .into_iter()
        .enumerate()
    {
        let r = register(format!("ok-{i}"), url).await;
        assert_eq!(r.status, 201, "{url}: {:?}", r.body);
    }
    for (i, url) in [
        "https://shop.example/uapay/../admin",
        "https://shop.example/uapay/%2e%2e/admin",
        "https://shop.example/UAPAY/cb",
    ]
    .into_iter()
    .enumerate()
    {
        let r = register(format!("no-{i}"), url).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (422, Some("callback_url_not_allowed")),
            "{url}"
        );
        let find = format!("/v1/operations?merchant_id={mid}&external_id=no-{i}");
        assert_eq!(app.admin("GET", &find, None).await.status, 404, "nothing stored for {url}");
    }
    assert_eq!(register("old-1".into(), "https://old.example/cb/1").await.status, 201);
    let patch = json!({"allowed_callback_urls": ["https://shop.example/uapay/"]});
    let r = app.admin("PATCH", &format!("/v1/merchants/{mid}"), Some(patch)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = register("old-2".into(), "https://old.example/cb/2").await;
    assert_eq!(r.body["error"]["code"], "callback_url_not_allowed", "removed by PATCH");
}

/// A config for `app::build` on the database in `dir`.
fn config_in(dir: &std::path::Path) -> payhook::config::Config {
    let mut c = payhook::config::Config::defaults();
    c.database = dir.join("payhook.db").to_string_lossy().into_owned();
    c.admin_token = Some(ADMIN.into());
    c.dispatch = false;
    c
}

async fn build_error(config: &payhook::config::Config) -> String {
    let clock = std::sync::Arc::new(payhook_core::clock::SystemClock);
    match payhook::app::build(config, clock).await {
        Ok(_) => panic!("payhook started against {}", config.database),
        Err(e) => format!("{e:#}"),
    }
}

/// Secrets at rest: the first start creates the master key file (0600) beside the database;
/// a later start without it, or with another key, is refused with a clear error; the right
/// key, from the file or from the setting, opens the merchants' secrets.
#[tokio::test]
async fn the_master_key_file_is_made_once_and_a_missing_or_wrong_key_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    // The key file belongs to SQLite (PostgreSQL nodes must be given the key): SQLite always.
    let app = spawn_app_on(TestDb::sqlite(), Mode::Manual, |_| {}).await;
    let key_file = app.dir().join("payhook.db.key");
    let mode = std::fs::metadata(&key_file).expect("key file made").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let m = app.merchant(json!({"name": "Shop", "callback_url": "https://shop.example/cb"})).await;
    let secret = m["signing_secret"].as_str().expect("secret").to_owned();
    app.shutdown.cancel();
    let dir = app.dir().to_owned();
    let key = std::fs::read_to_string(&key_file).expect("key");
    let db = std::fs::read(dir.join("payhook.db")).expect("db");
    assert!(!String::from_utf8_lossy(&db).contains(&secret[6..]), "secret in the file");

    let wrong = payhook_store::seal::Sealer::generate_key();
    let mut config = config_in(&dir);
    config.master_key = Some(wrong);
    let err = build_error(&config).await;
    assert!(err.contains("is not the master key"), "{err}");

    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = build_error(&config_in(&dir)).await;
    assert!(err.contains("readable by others"), "{err}");

    std::fs::rename(&key_file, dir.join("backup.key")).expect("move the key away");
    let err = build_error(&config_in(&dir)).await;
    assert!(err.contains("no master key was given") && err.contains("payhook.db.key"), "{err}");
    assert!(!key_file.exists(), "no new key file was left behind");

    let mut config = config_in(&dir);
    config.master_key = Some(key.trim().to_owned());
    let clock = std::sync::Arc::new(payhook_core::clock::SystemClock);
    let services = payhook::app::build(&config, clock).await.expect("the right key opens");
    let id = m["id"].as_str().expect("id").parse().expect("merchant id");
    let stored = services.store.get_merchant(&id).await.expect("read").expect("found");
    assert_eq!(stored.signing_secret.expose(), secret);
    assert!(services.generated_key_file.is_none());
}

/// `n` levels of nested arrays.
fn nested(n: usize) -> Value {
    (0..n).fold(json!(1), |inner, _| json!([inner]))
}

/// Posts a raw body to `path` as the admin.
async fn post_raw(app: &TestApp, path: &str, content_type: &str, body: String) -> Resp {
    let resp = app
        .http
        .post(format!("{}{path}", app.base))
        .bearer_auth(ADMIN)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    Resp { status, body: resp.json().await.unwrap_or(Value::Null) }
}

/// The merchant's events feed, as a list of statuses.
async fn feed(app: &TestApp, mid: &str) -> Vec<Value> {
    let r = app.admin("GET", &format!("/v1/events?merchant_id={mid}"), None).await;
    r.body["data"].as_array().expect("events").iter().map(|e| e["status"].clone()).collect()
}

#[tokio::test]
async fn every_class_of_bad_registration_has_its_code_and_stores_nothing() {
    let app = spawn_app(Mode::Manual).await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": "https://shop.example/cb"})).await;
    let w = app
        .merchant(json!({"name": "W", "dialect": "ws2mpi", "callback_url": "https://w.example/"}))
        .await;
    let mid = id_of(&m).to_owned();
    let base = json!({"merchant_id": mid, "external_id": "bad-1", "amount": 100,
        "currency": "UAH", "kind": "purchase"});
    let long_url = format!("https://shop.example/{}", "p".repeat(2048));
    let many: serde_json::Map<String, Value> =
        (0..300).map(|i| (format!("k{i}"), json!(i))).collect();
    let cases = [
        (json!({"data": {"deep": nested(40)}}), 400, "too_deep"),
        (json!({"amount": 9_223_372_036_854_775_808_u64}), 400, "malformed_request"),
        (json!({"amount": 0}), 422, "invalid_amount"),
        (json!({"amount": -100}), 422, "invalid_amount"),
        (json!({"currency": "XYZ"}), 422, "invalid_currency"),
        (json!({"currency": "123"}), 422, "invalid_currency"),
        (json!({"currency": "XXX"}), 422, "invalid_currency"),
        (json!({"currency": "uah"}), 422, "invalid_currency"),
        (json!({"kind": "k".repeat(65)}), 422, "field_too_long"),
        (json!({"kind": "purchase\nFAKE LOG LINE"}), 422, "invalid_field"),
        (json!({"external_id": "order\u{0}1"}), 422, "invalid_field"),
        (json!({"external_id": " "}), 422, "invalid_field"),
        (json!({"callback_url": long_url}), 422, "field_too_long"),
        (json!({"callback_url": "https://shop.exa\nmple/cb"}), 422, "invalid_field"),
        (json!({"callback_url": "javascript:alert(1)"}), 422, "invalid_url"),
        (json!({"return_url": "//evil.example/"}), 422, "invalid_url"),
        (json!({"data": {"k".repeat(65): 1}}), 422, "invalid_data"),
        (json!({"data": {"rrn": "9".repeat(2049)}}), 422, "invalid_data"),
        (json!({"data": many}), 422, "invalid_data"),
        (json!({"status_source": {"url": "file:///etc/passwd"}}), 422, "invalid_status_source"),
        (json!({"merchant_id": id_of(&w), "external_id": "x".repeat(33)}), 422, "field_too_long"),
    ];
    for (patch, status, code) in cases {
        let mut body = base.clone();
        body.as_object_mut().expect("object").extend(patch.as_object().expect("object").clone());
        let r = app.admin("POST", "/v1/operations", Some(body)).await;
        let shown = patch.to_string().chars().take(80).collect::<String>();
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (status, Some(code)), "{shown}");
        assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let raw = [
        ("text/plain", base.to_string(), 415, "unsupported_media_type"),
        ("application/json", "{\"merchant_id\":".into(), 400, "malformed_request"),
        ("application/json", format!("{}{}", "{\"a\":".repeat(100), "1"), 400, "too_deep"),
        ("application/json", format!("[{}]", "0,".repeat(40_000)), 413, "body_too_large"),
    ];
    for (content_type, body, status, code) in raw {
        let r = post_raw(&app, "/v1/operations", content_type, body).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (status, Some(code)), "{code}");
    }
    for (merchant, external_id) in [(mid.as_str(), "bad-1"), (id_of(&w), &"x".repeat(33))] {
        let find = format!("/v1/operations?merchant_id={merchant}&external_id={external_id}");
        assert_eq!(app.admin("GET", &find, None).await.status, 404, "nothing stored");
        assert_eq!(feed(&app, merchant).await, Vec::<Value>::new(), "no event stored");
    }
}

#[tokio::test]
async fn bad_status_reports_have_their_code_and_change_nothing() {
    let app = spawn_app(Mode::Manual).await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": "https://shop.example/cb"})).await;
    let op = app.operation(id_of(&m), "o-1", json!({"data": {"rrn": "1"}})).await;
    let path = format!("/v1/operations/{}/status", id_of(&op));
    let cases = [
        (json!({"status": "success", "event_key": "k".repeat(129)}), 422, "field_too_long"),
        (json!({"status": "success", "event_key": "a\r\nb"}), 422, "invalid_field"),
        (json!({"status": "success", "data": {"rrn": "9".repeat(5000)}}), 422, "invalid_data"),
        (json!({"status": "success", "data": {"d": nested(33)}}), 400, "too_deep"),
        (json!({"status": "paid"}), 422, "unknown_status"),
        (json!({"status": "success", "extra": 1}), 400, "malformed_request"),
    ];
    for (body, status, code) in cases {
        let r = app.admin("POST", &path, Some(body.clone())).await;
        let shown = body.to_string().chars().take(80).collect::<String>();
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (status, Some(code)), "{shown}");
    }
    let now = app.admin("GET", &format!("/v1/operations/{}", id_of(&op)), None).await;
    assert_eq!((now.body["status"].as_str(), now.body["seq"].as_i64()), (Some("created"), Some(0)));
    assert_eq!(now.body["data"], json!({"rrn": "1"}), "data untouched");
    assert_eq!(feed(&app, id_of(&m)).await, [json!("created")]);
    assert_eq!(app.deliveries(id_of(&op)).await, Vec::<Value>::new());
}

#[tokio::test]
async fn merchants_are_rate_limited_per_token_with_retry_after() {
    let app = spawn_app_with(Mode::Manual, |c| {
        c.rate_limit = 1;
        c.rate_limit_burst = 3;
    })
    .await;
    let a = app.merchant(json!({"name": "A", "callback_url": "https://a.example/cb"})).await;
    let b = app.merchant(json!({"name": "B", "callback_url": "https://b.example/cb"})).await;
    let key_a = a["api_key"].as_str().expect("key");
    let get = |key: &str| {
        app.http.get(format!("{}/v1/events", app.base)).bearer_auth(key.to_owned()).send()
    };
    let mut statuses = Vec::new();
    let limited = loop {
        let resp = get(key_a).await.expect("request");
        statuses.push(resp.status().as_u16());
        if resp.status().as_u16() == 429 || statuses.len() == 10 {
            break resp;
        }
    };
    assert_eq!(&statuses[..3], [200, 200, 200], "the burst passes");
    assert_eq!(limited.status().as_u16(), 429, "then the limit: {statuses:?}");
    let retry_after: u64 =
        limited.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: Value = limited.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    let b_status = get(b["api_key"].as_str().expect("key")).await.expect("request").status();
    assert_eq!(b_status.as_u16(), 200, "another merchant has its own bucket");
    for _ in 0..10 {
        let r = app.admin("GET", &format!("/v1/events?merchant_id={}", id_of(&a)), None).await;
        assert_eq!(r.status, 200, "the admin token is not limited by default");
    }
}

/// Who calls, in the access matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Admin,
    Owner,
    Other,
    NoToken,
    Malformed,
}

/// Which callers an endpoint admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    AdminOnly,
    AdminOrOwner,
    Public,
}

/// One row of the matrix: an endpoint, who may call it, and its success status.
pub(crate) struct Endpoint {
    pub method: &'static str,
    /// With `{mer}`, `{op}`, `{dlv}` and `{ext}` filled in from the fixture.
    pub path: &'static str,
    access: Access,
    ok: u16,
    body: Option<Value>,
}

/// Every route of the API (SPEC §3), in the order the matrix calls them.
pub(crate) fn endpoints() -> Vec<Endpoint> {
    use Access::*;
    let e = |method, path, access, ok, body| Endpoint { method, path, access, ok, body };
    vec![
        e("POST", "/v1/merchants", AdminOnly, 201, Some(json!({"name": "New"}))),
        e("GET", "/v1/merchants", AdminOnly, 200, None),
        e("GET", "/v1/merchants/{mer}", AdminOnly, 200, None),
        e("PATCH", "/v1/merchants/{mer}", AdminOnly, 200, Some(json!({"name": "Owner"}))),
        e("POST", "/v1/merchants/{mer}/rotate-secret", AdminOnly, 200, None),
        e("POST", "/v1/merchants/{mer}/pause", AdminOnly, 200, None),
        e("POST", "/v1/merchants/{mer}/resume", AdminOnly, 200, None),
        e(
            "POST",
            "/v1/merchants/{mer}/recover",
            AdminOnly,
            200,
            Some(json!({"since": "2023-11-14T00:00:00Z"})),
        ),
        e("POST", "/v1/operations", AdminOnly, 200, None),
        e("GET", "/v1/operations?merchant_id={mer}&external_id={ext}", AdminOrOwner, 200, None),
        e("GET", "/v1/operations/{op}", AdminOrOwner, 200, None),
        e("POST", "/v1/operations/{op}/status", AdminOnly, 202, Some(json!({"status": "success"}))),
        e(
            "POST",
            "/v1/operations/status:batch",
            AdminOnly,
            200,
            Some(json!({"items": [{"operation_id": "op_unknown", "status": "success"}]})),
        ),
        e("GET", "/v1/operations/{op}/events", AdminOrOwner, 200, None),
        e("GET", "/v1/operations/{op}/deliveries", AdminOrOwner, 200, None),
        e("GET", "/v1/operations/{op}/polls", AdminOrOwner, 200, None),
        e("GET", "/v1/operations/{op}/return", Public, 303, None),
        e("POST", "/v1/deliveries/{dlv}/resend", AdminOrOwner, 202, None),
        e("GET", "/v1/events?merchant_id={mer}", AdminOrOwner, 200, None),
        e("GET", "/v1/stats/deliveries", AdminOnly, 200, None),
        // Before each caller the owner holds only its first key (`keys_ready`).
        e("POST", "/v1/merchants/{mer}/keys", AdminOrOwner, 201, None),
        e("GET", "/v1/merchants/{mer}/keys", AdminOrOwner, 200, None),
        // Before each caller the owner holds a second key, `{key_id}`.
        e("DELETE", "/v1/merchants/{mer}/keys/{key_id}", AdminOrOwner, 204, None),
        e("GET", "/v1/audit", AdminOnly, 200, None),
        // Last of the merchant's routes: an archived merchant takes no new operation.
        e("POST", "/v1/merchants/{mer}/archive", AdminOnly, 200, None),
        e("GET", "/healthz", Public, 200, None),
        e("GET", "/readyz", Public, 200, None),
        e("GET", "/openapi.json", Public, 200, None),
    ]
}

/// Authorization headers that must never authenticate anyone.
fn malformed_tokens(owner_key: &str) -> Vec<String> {
    vec![
        "Bearer".into(),
        "Bearer ".into(),
        "Bearer    ".into(),
        format!("Basic {ADMIN}"),
        format!("Token {ADMIN}"),
        ADMIN.into(),
        format!("Bearer {ADMIN}x"),
        format!("Bearer {}", &ADMIN[..ADMIN.len() - 1]),
        format!("Bearer {}", &owner_key[..owner_key.len() - 1]),
        format!("Bearer {owner_key}x"),
        "Bearer pk_".into(),
        "Bearer pk_forged".into(),
        "Bearer pk_\u{e9}t\u{e9}".into(),
    ]
}

/// Sets the owner's keys up for a key endpoint so that every caller meets the same state:
/// for creating, only its first key; for revoking, a second key, whose id it returns. Its
/// first key, which the matrix calls with, is never revoked.
async fn keys_ready(app: &TestApp, ep: &Endpoint, owner: &str, first_key: &str) -> String {
    let keys_path = format!("/v1/merchants/{owner}/keys");
    let held = app.admin("GET", &keys_path, None).await.body["data"].clone();
    let extra: Vec<String> = held
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["id"].as_str().expect("id").to_owned())
        .filter(|id| id != first_key)
        .collect();
    match (ep.method, extra.first()) {
        ("DELETE", Some(second)) => second.clone(),
        ("DELETE", None) => id_of(&app.admin("POST", &keys_path, None).await.body).to_owned(),
        _ => {
            for id in &extra {
                let gone = app.admin("DELETE", &format!("{keys_path}/{id}"), None).await;
                assert_eq!(gone.status, 204, "{:?}", gone.body);
            }
            String::new()
        }
    }
}

fn expected(access: Access, who: Who, ok: u16) -> u16 {
    match (access, who) {
        (Access::Public, _) => ok,
        (_, Who::NoToken | Who::Malformed) => 401,
        (_, Who::Admin) => ok,
        (Access::AdminOrOwner, Who::Owner) => ok,
        (_, Who::Owner | Who::Other) => 403,
    }
}

/// Every endpoint × {admin, owning merchant, other merchant, no token, malformed tokens}.
#[tokio::test]
async fn access_matrix_covers_every_endpoint_and_caller() {
    let app = spawn_app(Mode::Manual).await;
    let owner = app
        .merchant(
            json!({"name": "Owner", "dialect": "ws2mpi", "callback_url": "https://o.example/cb"}),
        )
        .await;
    let other =
        app.merchant(json!({"name": "Other", "callback_url": "https://x.example/cb"})).await;
    let register = json!({"merchant_id": id_of(&owner), "external_id": "matrix-1", "amount": 100,
        "currency": "UAH", "kind": "purchase", "return_url": "https://o.example/back",
        "status_source": {"url": "https://o.example/status"}});
    let r = app.admin("POST", "/v1/operations", Some(register.clone())).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let op = id_of(&r.body).to_owned();
    assert_eq!(app.report(&op, "success").await.status, 202);
    let owner_key = owner["api_key"].as_str().expect("key").to_owned();
    let other_key = other["api_key"].as_str().expect("key").to_owned();
    let first_key = owner["api_key_id"].as_str().expect("key id").to_owned();

    let fill = |p: &str, dlv: &str| {
        p.replace("{mer}", id_of(&owner))
            .replace("{op}", &op)
            .replace("{dlv}", dlv)
            .replace("{ext}", "matrix-1")
    };
    // The return route redirects the customer: look at the 303, do not follow it.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut checked = 0;
    for ep in endpoints() {
        // The newest delivery: resending an older one would be refused as superseded.
        let newest = app.deliveries(&op).await.last().cloned().expect("a delivery");
        let template = fill(ep.path, newest["id"].as_str().expect("id"));
        let body =
            if ep.path == "/v1/operations" { Some(register.clone()) } else { ep.body.clone() };
        let mut callers: Vec<(Who, Option<String>)> = vec![
            (Who::NoToken, None),
            (Who::Other, Some(format!("Bearer {other_key}"))),
            (Who::Owner, Some(format!("Bearer {owner_key}"))),
        ];
        callers.extend(malformed_tokens(&owner_key).into_iter().map(|t| (Who::Malformed, Some(t))));
        callers.push((Who::Admin, Some(format!("Bearer {ADMIN}"))));
        for (who, auth) in callers {
            let path = if ep.path.contains("/keys") {
                template
                    .replace("{key_id}", &keys_ready(&app, &ep, id_of(&owner), &first_key).await)
            } else {
                template.clone()
            };
            let method = reqwest::Method::from_bytes(ep.method.as_bytes()).expect("method");
            let mut req = http.request(method, format!("{}{path}", app.base));
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = req.send().await.expect("request");
            let status = resp.status().as_u16();
            let got: Value = resp.json().await.unwrap_or(Value::Null);
            let want = expected(ep.access, who, ep.ok);
            assert_eq!(status, want, "{} {path} as {who:?} ({auth:?}): {got}", ep.method);
            if want == 401 || want == 403 {
                let code = if want == 401 { "unauthorized" } else { "forbidden" };
                assert_eq!(got["error"]["code"], code, "{} {path} as {who:?}", ep.method);
            }
            checked += 1;
        }
    }
    assert_eq!(checked, endpoints().len() * (4 + malformed_tokens(&owner_key).len()));
    // Nothing the refused callers sent took effect.
    let m = app.admin("GET", &format!("/v1/merchants/{}", id_of(&owner)), None).await;
    assert_eq!(m.body["name"], "Owner");
}
