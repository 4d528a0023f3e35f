//! The HTTP contract: auth, validation, idempotency, transitions, the feed.

use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn merchant_secrets_are_shown_once() {
    let app = spawn_app(Mode::Manual).await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": "https://shop.example/cb"})).await;
    assert!(m["api_key"].as_str().expect("api key").starts_with("pk_"));
    assert!(m["signing_secret"].as_str().expect("secret").starts_with("whsec_"));
    let read =
        app.admin("GET", &format!("/v1/merchants/{}", m["id"].as_str().expect("id")), None).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["name"], "Shop");
    assert!(read.body.get("api_key").is_none() && read.body.get("signing_secret").is_none());
}

#[tokio::test]
async fn authentication_and_ownership() {
    let app = spawn_app(Mode::Manual).await;
    let a = app.merchant(json!({"name": "A", "callback_url": "https://a.example/cb"})).await;
    let b = app.merchant(json!({"name": "B", "callback_url": "https://b.example/cb"})).await;
    let (a_id, a_key) = (a["id"].as_str().expect("id"), a["api_key"].as_str().expect("key"));
    let b_key = b["api_key"].as_str().expect("key");
    let op = app.operation(a_id, "order-1", json!({})).await;
    let path = format!("/v1/operations/{}", op["id"].as_str().expect("id"));

    assert_eq!(app.call("GET", &path, None, None).await.status, 401);
    let bad = app.call("GET", &path, Some("not-a-token"), None).await;
    assert_eq!((bad.status, bad.body["error"]["code"].as_str()), (401, Some("unauthorized")));
    assert_eq!(app.call("GET", &path, Some("pk_forged"), None).await.status, 401);
    assert_eq!(app.call("GET", &path, Some(a_key), None).await.status, 200);
    assert_eq!(app.call("GET", &path, Some(b_key), None).await.status, 403);
    let create = app.call("POST", "/v1/merchants", Some(a_key), Some(json!({"name": "X"}))).await;
    assert_eq!(create.status, 403, "merchants cannot create merchants");
    let report = app
        .call("POST", &format!("{path}/status"), Some(a_key), Some(json!({"status": "success"})))
        .await;
    assert_eq!(report.status, 403, "merchants cannot report statuses");
}

#[tokio::test]
async fn registration_is_idempotent_on_external_id() {
    let app = spawn_app(Mode::Manual).await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": "https://shop.example/cb"})).await;
    let mid = m["id"].as_str().expect("id");
    let body = json!({"merchant_id": mid, "external_id": "o-1", "amount": 100, "currency": "UAH", "kind": "purchase"});
    let first = app.admin("POST", "/v1/operations", Some(body.clone())).await;
    assert_eq!(first.status, 201);
    assert_eq!(first.body["number"].as_i64().map(|n| n > 0), Some(true));
    let again = app.admin("POST", "/v1/operations", Some(body.clone())).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["id"], first.body["id"]);
    let mut changed = body.clone();
    changed["amount"] = json!(200);
    let conflict = app.admin("POST", "/v1/operations", Some(changed)).await;
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.body["error"]["code"], "external_id_conflict");
    let found =
        app.admin("GET", &format!("/v1/operations?merchant_id={mid}&external_id=o-1"), None).await;
    assert_eq!(found.body["amount"], 100, "the conflicting body changed nothing");
}

#[tokio::test]
async fn bad_input_is_refused_with_a_code_and_stores_nothing() {
    let app = spawn_app(Mode::Manual).await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": "https://shop.example/cb"})).await;
    let mid = m["id"].as_str().expect("id");
    let base = json!({"merchant_id": mid, "external_id": "bad-1", "amount": 100, "currency": "UAH", "kind": "purchase"});
    let cases = [
        (json!({"currency": "hryvnia"}), 422, "invalid_currency"),
        (json!({"amount": 0}), 422, "invalid_amount"),
        (json!({"amount": -1}), 422, "invalid_amount"),
        (json!({"callback_url": "ftp://x.example/"}), 422, "invalid_url"),
        (json!({"external_id": "x".repeat(65)}), 422, "field_too_long"),
        (json!({"dialect": "carrier-pigeon"}), 422, "unknown_dialect"),
        (json!({"retry": {"schedule": ["soon"]}}), 422, "invalid_retry_policy"),
        (json!({"merchant_id": "mer_nope"}), 422, "unknown_merchant"),
        (json!({"surprise": 1}), 400, "malformed_request"),
        (json!({"amount": "100"}), 400, "malformed_request"),
    ];
    for (patch, status, code) in cases {
        let mut body = base.clone();
        body.as_object_mut().expect("object").extend(patch.as_object().expect("object").clone());
        let r = app.admin("POST", "/v1/operations", Some(body)).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (status, Some(code)), "{patch}");
        assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let raw = app
        .http
        .post(format!("{}/v1/operations", app.base))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(raw.status().as_u16(), 400);
    let huge = json!({"merchant_id": mid, "external_id": "big", "amount": 1, "currency": "UAH",
        "kind": "purchase", "data": {"blob": "x".repeat(70 * 1024)}});
    let r = app.admin("POST", "/v1/operations", Some(huge)).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (413, Some("body_too_large")));
    let found = app
        .admin("GET", &format!("/v1/operations?merchant_id={mid}&external_id=bad-1"), None)
        .await;
    assert_eq!(found.status, 404, "nothing was stored");
    let feed = app.admin("GET", &format!("/v1/events?merchant_id={mid}"), None).await;
    assert_eq!(feed.body["data"], json!([]));
}

#[tokio::test]
async fn illegal_transitions_are_refused_and_store_nothing() {
    let app = spawn_app(Mode::Manual).await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": "https://shop.example/cb"})).await;
    let op = app.operation(m["id"].as_str().expect("id"), "o-1", json!({})).await;
    let id = op["id"].as_str().expect("id");
    assert_eq!(app.report(id, "failed").await.status, 202);
    let r = app.report(id, "success").await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (409, Some("invalid_transition")));
    let r = app.report(id, "teleported").await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (422, Some("unknown_status")));
    let now = app.admin("GET", &format!("/v1/operations/{id}"), None).await;
    assert_eq!((now.body["status"].as_str(), now.body["seq"].as_i64()), (Some("failed"), Some(1)));
    assert_eq!(app.deliveries(id).await.len(), 1, "no delivery for the refused change");
}

#[tokio::test]
async fn event_keys_make_reports_idempotent() {
    let app = spawn_app(Mode::Manual).await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": "https://shop.example/cb"})).await;
    let op = app.operation(m["id"].as_str().expect("id"), "o-1", json!({})).await;
    let path = format!("/v1/operations/{}/status", op["id"].as_str().expect("id"));
    let body = json!({"status": "pending", "event_key": "core-evt-1", "data": {"rrn": "123"}});
    let first = app.admin("POST", &path, Some(body.clone())).await;
    let second = app.admin("POST", &path, Some(body)).await;
    assert_eq!((first.status, second.status), (202, 202));
    assert_eq!(first.body["id"], second.body["id"]);
    assert_eq!(
        (first.body["duplicate"].as_bool(), second.body["duplicate"].as_bool()),
        (Some(false), Some(true))
    );
    let other = app
        .admin("POST", &path, Some(json!({"status": "success", "event_key": "core-evt-1"})))
        .await;
    assert_eq!(
        (other.status, other.body["error"]["code"].as_str()),
        (409, Some("event_key_conflict"))
    );
    let now =
        app.admin("GET", &format!("/v1/operations/{}", op["id"].as_str().expect("id")), None).await;
    assert_eq!(now.body["seq"], 1);
    assert_eq!(now.body["data"]["rrn"], "123");
}

#[tokio::test]
async fn events_feed_pages_by_cursor() {
    let app = spawn_app(Mode::Manual).await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": "https://shop.example/cb"})).await;
    let other =
        app.merchant(json!({"name": "Other", "callback_url": "https://o.example/cb"})).await;
    let mid = m["id"].as_str().expect("id");
    let op = app.operation(mid, "o-1", json!({})).await;
    let noise = app.operation(other["id"].as_str().expect("id"), "n-1", json!({})).await;
    let id = op["id"].as_str().expect("id");
    for s in ["pending", "requires_3ds", "success", "refunded"] {
        assert_eq!(app.report(id, s).await.status, 202);
        let _ = app.report(noise["id"].as_str().expect("id"), "pending").await;
    }
    let page = app.admin("GET", &format!("/v1/events?merchant_id={mid}&limit=3"), None).await;
    let statuses: Vec<_> =
        page.body["data"].as_array().expect("data").iter().map(|e| e["status"].clone()).collect();
    assert_eq!(statuses, [json!("created"), json!("pending"), json!("requires_3ds")]);
    let after = page.body["next_after"].as_i64().expect("cursor");
    let rest =
        app.call("GET", &format!("/v1/events?after={after}"), m["api_key"].as_str(), None).await;
    assert_eq!(rest.status, 200, "a merchant reads its own feed without naming itself");
    let statuses: Vec<_> =
        rest.body["data"].as_array().expect("data").iter().map(|e| e["status"].clone()).collect();
    assert_eq!(statuses, [json!("success"), json!("refunded")]);
}

#[tokio::test]
async fn return_redirect_waits_for_a_final_status() {
    let app = spawn_app(Mode::Manual).await;
    let m = app.merchant(json!({"name": "Shop", "dialect": "xpay"})).await;
    let op = app
        .operation(
            m["id"].as_str().expect("id"),
            "o-1",
            json!({
            "success_url": "https://partner.host/cb_success",
            "fail_url": "https://partner.host/cb_fail",
            "return_url": "https://partner.host/resul_page"}),
        )
        .await;
    let id = op["id"].as_str().expect("id");
    let path = format!("/v1/operations/{id}/return");
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let early = no_redirects.get(format!("{}{path}", app.base)).send().await.expect("request");
    assert_eq!(early.status().as_u16(), 409);
    app.report(id, "success").await;
    let done = no_redirects.get(format!("{}{path}", app.base)).send().await.expect("request");
    assert_eq!(done.status().as_u16(), 303);
    assert_eq!(done.headers()["location"], "https://partner.host/resul_page");
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app(Mode::Manual).await;
    assert_eq!(app.call("GET", "/healthz", None, None).await.status, 200);
    let ready = app.call("GET", "/readyz", None, None).await;
    assert_eq!((ready.status, ready.body["status"].as_str()), (200, Some("ready")));
    let missing = app.call("GET", "/v1/nothing-here", None, None).await;
    assert_eq!((missing.status, missing.body["error"]["code"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn batch_reports_succeed_or_fail_per_item() {
    let app = spawn_app(Mode::Manual).await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": "https://shop.example/cb"})).await;
    let mid = m["id"].as_str().expect("id");
    let a = app.operation(mid, "a", json!({})).await;
    let b = app.operation(mid, "b", json!({})).await;
    let (a, b) = (a["id"].as_str().expect("id"), b["id"].as_str().expect("id"));
    app.report(b, "failed").await;
    let r = app
        .admin(
            "POST",
            "/v1/operations/status:batch",
            Some(json!({"items": [
                {"operation_id": a, "status": "success", "event_key": "k1"},
                {"operation_id": b, "status": "success"},
                {"operation_id": "op_missing", "status": "success"},
                {"operation_id": a, "status": "bogus"},
            ]})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let results = r.body["results"].as_array().expect("results");
    assert_eq!(results[0]["ok"], true);
    assert_eq!(results[0]["event"]["status"], "success");
    assert_eq!(
        (results[1]["status"].as_u64(), results[1]["error"]["code"].as_str()),
        (Some(409), Some("invalid_transition"))
    );
    assert_eq!(
        (results[2]["status"].as_u64(), results[2]["error"]["code"].as_str()),
        (Some(404), Some("not_found"))
    );
    assert_eq!(
        (results[3]["status"].as_u64(), results[3]["error"]["code"].as_str()),
        (Some(422), Some("unknown_status"))
    );
    let b_now = app.admin("GET", &format!("/v1/operations/{b}"), None).await;
    assert_eq!(
        (b_now.body["status"].as_str(), b_now.body["seq"].as_i64()),
        (Some("failed"), Some(1))
    );
    let empty = app.admin("POST", "/v1/operations/status:batch", Some(json!({"items": []}))).await;
    assert_eq!((empty.status, empty.body["error"]["code"].as_str()), (422, Some("invalid_batch")));
}

#[tokio::test]
async fn the_admin_lists_merchants_by_cursor_and_filters_and_nobody_else_does() {
    let app = spawn_app(Mode::Manual).await;
    let mut ids = Vec::new();
    for (name, dialect) in
        [("Kyiv Coffee", "standard"), ("Lviv coffee", "xpay"), ("Books", "standard")]
    {
        let m = app
            .merchant(json!({"name": name, "dialect": dialect,
            "callback_url": "https://shop.example/cb"}))
            .await;
        ids.push(m["id"].as_str().expect("id").to_owned());
    }
    let first = app.admin("GET", "/v1/merchants?limit=2", None).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let names: Vec<&str> = first.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["Kyiv Coffee", "Lviv coffee"]);
    assert!(first.body["data"][0].get("signing_secret").is_none(), "no secrets in the list");
    assert_eq!(first.body["next_after"], ids[1].as_str());
    let next = app.admin("GET", &format!("/v1/merchants?after={}", ids[1]), None).await;
    assert_eq!(next.body["data"][0]["id"], ids[2].as_str());
    let coffee = app.admin("GET", "/v1/merchants?name=COFFEE&dialect=xpay", None).await;
    let found: Vec<&str> = coffee.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(found, [ids[1].as_str()]);
    let empty = app.admin("GET", &format!("/v1/merchants?after={}", ids[2]), None).await;
    assert_eq!(
        (empty.body["data"].as_array().map(Vec::len), &empty.body["next_after"]),
        (Some(0), &json!(ids[2]))
    );

    for (query, code) in [
        ("after=42", "invalid_cursor"),
        ("dialect=telex", "unknown_dialect"),
        ("limit=0", "invalid_limit"),
    ] {
        let r = app.admin("GET", &format!("/v1/merchants?{query}"), None).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (422, Some(code)), "{query}");
    }
    let key = app.merchant(json!({"name": "Own", "callback_url": "https://own.example/cb"})).await;
    let r = app.call("GET", "/v1/merchants", key["api_key"].as_str(), None).await;
    assert_eq!(r.status, 403, "a merchant key lists no merchants");
    assert_eq!(app.call("GET", "/v1/merchants", None, None).await.status, 401);
}
