//! The API's contract at the door, over real HTTP: one JSON parser policy on every route
//! (duplicate keys, media types), JSON errors for 404 and 405, literal forbidden hosts and
//! userinfo refused at registration, and the security headers.

use crate::helpers::*;
use serde_json::{json, Value};

/// A raw request: `body` sent as is with `content_type`, when given.
async fn raw(
    app: &TestApp,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<&str>,
) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = app.http.request(method, format!("{}{path}", app.base)).bearer_auth(ADMIN);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(b) = body {
        req = req.body(b.to_owned());
    }
    req.send().await.expect("request")
}

async fn status_and_code(resp: reqwest::Response) -> (u16, Option<String>) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body["error"]["code"].as_str().map(str::to_owned))
}

fn code(status: u16, code: &str) -> (u16, Option<String>) {
    (status, Some(code.to_owned()))
}

#[tokio::test]
async fn a_key_twice_is_refused_on_every_route_that_takes_a_body() {
    let app = spawn_app(Mode::Manual).await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": "https://shop.example/cb"})).await;
    let mid = m["id"].as_str().expect("id");
    let other =
        app.merchant(json!({"name": "Other", "callback_url": "https://o.example/cb"})).await;
    let op = app.operation(mid, "o-1", json!({})).await;
    let oid = op["id"].as_str().expect("id");
    let twice = format!(
        r#"{{"merchant_id":"{mid}","merchant_id":"{}","external_id":"dup","amount":1,
           "currency":"UAH","kind":"purchase"}}"#,
        other["id"].as_str().expect("id")
    );
    let cases = [
        ("POST", "/v1/merchants".to_owned(), r#"{"name":"a","name":"b"}"#.to_owned()),
        ("PATCH", format!("/v1/merchants/{mid}"), r#"{"name":"a","name":"b"}"#.to_owned()),
        ("POST", "/v1/operations".to_owned(), twice),
        (
            "POST",
            format!("/v1/operations/{oid}/status"),
            r#"{"status":"pending","status":"success"}"#.to_owned(),
        ),
        (
            "POST",
            "/v1/operations/status:batch".to_owned(),
            format!(
                r#"{{"items":[{{"operation_id":"{oid}","status":"pending","status":"failed"}}]}}"#
            ),
        ),
    ];
    for (method, path, body) in cases {
        let r = raw(&app, method, &path, Some("application/json"), Some(&body)).await;
        assert_eq!(status_and_code(r).await, code(400, "duplicate_key"), "{method} {path}");
    }
    let find = format!("/v1/operations?merchant_id={mid}&external_id=dup");
    let found = app.admin("GET", &find, None).await;
    assert_eq!(found.status, 404, "the operation with two merchant ids was not stored");
    let now = app.admin("GET", &format!("/v1/operations/{oid}"), None).await;
    assert_eq!(now.body["status"], "created", "no report with a repeated key was applied");
}

#[tokio::test]
async fn bodies_are_json_patch_also_merge_patch_and_bodiless_posts_need_no_type() {
    let app = spawn_app(Mode::Manual).await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": "https://shop.example/cb"})).await;
    let mid = m["id"].as_str().expect("id");
    let body = r#"{"name":"Renamed"}"#;
    let patch = format!("/v1/merchants/{mid}");
    let cases = [
        ("POST", "/v1/merchants", "text/plain", 415),
        ("POST", "/v1/merchants", "application/json; charset=latin1", 415),
        ("POST", "/v1/merchants", "application/merge-patch+json", 415),
        ("POST", "/v1/merchants", "application/vnd.payhook+json", 415),
        ("PATCH", patch.as_str(), "application/merge-patch+json", 200),
        ("PATCH", patch.as_str(), "application/json; charset=utf-8", 200),
        ("PATCH", patch.as_str(), "text/json", 415),
    ];
    for (method, path, ct, expect) in cases {
        let r = raw(&app, method, path, Some(ct), Some(body)).await;
        assert_eq!(r.status().as_u16(), expect, "{method} {path} as {ct}");
    }
    let r = raw(&app, "POST", "/v1/operations/status:batch", None, None).await;
    assert_eq!(status_and_code(r).await, code(415, "unsupported_media_type"));
    let r = raw(&app, "POST", &format!("/v1/merchants/{mid}/rotate-secret"), None, None).await;
    assert_eq!(r.status().as_u16(), 200, "a POST without a body needs no content type");
}

#[tokio::test]
async fn every_refusal_is_a_json_error_404_and_405_included() {
    let app = spawn_app(Mode::Manual).await;
    let r = raw(&app, "GET", "/v1/nowhere", None, None).await;
    assert_eq!(status_and_code(r).await, code(404, "not_found"));
    let r = raw(&app, "DELETE", "/v1/merchants", None, None).await;
    assert!(r.headers().get("allow").is_some(), "a 405 says what is allowed");
    assert_eq!(status_and_code(r).await, code(405, "method_not_allowed"));
    let r = raw(&app, "PUT", "/v1/operations/status:batch", None, None).await;
    assert_eq!(status_and_code(r).await, code(405, "method_not_allowed"));
}

#[tokio::test]
async fn literal_forbidden_hosts_are_refused_at_registration_in_every_form() {
    let app = spawn_app_with(Mode::Manual, |c| {
        c.allow_private_targets = false;
        c.allow_cidrs = vec!["10.0.0.0/8".parse().expect("cidr")];
    })
    .await;
    let forbidden = [
        "http://169.254.169.254/latest/meta-data/",
        "http://192.168.1.1/",
        "http://[::1]/cb",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://0x7f.0.0.1/",
        "http://[::ffff:127.0.0.1]/cb",
        "http://localhost:9000/cb",
    ];
    for url in forbidden {
        let r = app.admin("POST", "/v1/merchants", Some(json!({"name": "S", "callback_url": url})));
        let r = r.await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (422, Some("blocked_target")),
            "{url}"
        );
        let r = app
            .admin(
                "POST",
                "/v1/merchants",
                Some(json!({"name": "S", "dialect": "uapay",
                "allowed_callback_urls": [url]})),
            )
            .await;
        assert_eq!(r.body["error"]["field"], "allowed_callback_urls", "{url}: {:?}", r.body);
    }
    let m = app.merchant(json!({"name": "Shop", "callback_url": "https://shop.example/cb"})).await;
    let register = |extra: Value| {
        let mut body = json!({"merchant_id": m["id"], "external_id": "o", "amount": 1,
            "currency": "UAH", "kind": "purchase"});
        body.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        app.admin("POST", "/v1/operations", Some(body))
    };
    for (field, extra) in [
        ("callback_url", json!({"callback_url": "http://169.254.169.254/"})),
        ("fail_url", json!({"dialect": "xpay", "fail_url": "http://[::1]/f"})),
        (
            "status_source",
            json!({"status_source": {"url": "http://127.0.0.1/s", "schedule": ["1s"]}}),
        ),
    ] {
        let r = register(extra).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (422, Some("blocked_target")));
        assert_eq!(r.body["error"]["field"], field);
    }
    // The operator's --allow-cidr opens its range at the door exactly as at delivery.
    let r = app
        .admin(
            "POST",
            "/v1/merchants",
            Some(json!({"name": "S", "callback_url": "http://10.1.2.3/cb"})),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}

#[tokio::test]
async fn urls_with_userinfo_are_refused_and_never_echoed() {
    let app = spawn_app(Mode::Manual).await;
    let url = "https://user:s3cr3t-pass@shop.example/cb";
    let r =
        app.admin("POST", "/v1/merchants", Some(json!({"name": "S", "callback_url": url}))).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (422, Some("invalid_url")));
    assert!(!r.body.to_string().contains("s3cr3t-pass"), "{:?}", r.body);
}

#[tokio::test]
async fn security_headers_on_every_answer_and_no_store_on_secrets() {
    let app = spawn_app(Mode::Manual).await;
    for path in ["/healthz", "/v1/nowhere", "/ui", "/openapi.json"] {
        let r = raw(&app, "GET", path, None, None).await;
        let h = r.headers();
        assert_eq!(
            h.get("x-content-type-options").map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{path}"
        );
        assert_eq!(
            h.get("referrer-policy").map(|v| v.as_bytes()),
            Some(&b"no-referrer"[..]),
            "{path}"
        );
    }
    let ui = raw(&app, "GET", "/ui", None, None).await;
    let csp = ui.headers().get("content-security-policy").expect("a CSP on the dashboard");
    let csp = csp.to_str().expect("ascii");
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let body = r#"{"name":"Shop","callback_url":"https://shop.example/cb"}"#;
    let created = raw(&app, "POST", "/v1/merchants", Some("application/json"), Some(body)).await;
    assert_eq!(
        created.headers().get("cache-control").map(|v| v.as_bytes()),
        Some(&b"no-store"[..])
    );
    let id = created.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_owned();
    let rotated = raw(&app, "POST", &format!("/v1/merchants/{id}/rotate-secret"), None, None).await;
    assert_eq!(
        rotated.headers().get("cache-control").map(|v| v.as_bytes()),
        Some(&b"no-store"[..])
    );
    let read = raw(&app, "GET", &format!("/v1/merchants/{id}"), None, None).await;
    assert!(read.headers().get("cache-control").is_none(), "no secret, no need");
}
