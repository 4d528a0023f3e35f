//! A merchant's API keys through the API: rotation with two keys, the limits, who may do
//! what, the hour of last use, and the audit log of it all.

use crate::helpers::*;
use serde_json::{json, Value};
use std::time::Duration;

fn id_of(v: &Value) -> &str {
    v["id"].as_str().expect("id")
}

fn ids(list: &Resp) -> Vec<String> {
    let data = list.body["data"].as_array().expect("data");
    data.iter().map(|k| k["id"].as_str().expect("id").to_owned()).collect()
}

/// Creates a key as `token`; returns the answer's `Cache-Control` and its body.
async fn create_key(app: &TestApp, mid: &str, token: &str) -> (u16, String, Value) {
    let url = format!("{}/v1/merchants/{mid}/keys", app.base);
    let resp = app.http.post(url).bearer_auth(token).send().await.expect("request");
    let status = resp.status().as_u16();
    let cache = resp.headers().get("cache-control").map_or("", |v| v.to_str().unwrap_or(""));
    let cache = cache.to_owned();
    (status, cache, resp.json().await.expect("json"))
}

#[tokio::test]
async fn a_merchant_rotates_its_key_with_two_at_once_and_never_none() {
    let app = spawn_app(Mode::Manual).await;
    let m = app.merchant(json!({"name": "Rotating", "callback_url": "https://r.example/cb"})).await;
    let mid = m["id"].as_str().expect("id");
    let first = m["api_key"].as_str().expect("key").to_owned();
    let first_id = m["api_key_id"].as_str().expect("key id").to_owned();
    let keys_path = format!("/v1/merchants/{mid}/keys");

    let (status, cache, second) = create_key(&app, mid, &first).await;
    assert_eq!((status, cache.as_str()), (201, "no-store"), "{second}");
    let second_key = second["key"].as_str().expect("shown once").to_owned();
    assert_eq!(second["prefix"], second_key[..9], "the prefix is the key's start");
    let listed = app.call("GET", &keys_path, Some(&second_key), None).await;
    assert_eq!(ids(&listed), [first_id.clone(), id_of(&second).to_owned()], "oldest first");
    assert!(!listed.body.to_string().contains(&second_key[9..]), "never the key");
    assert!(!listed.body.to_string().contains(&first[9..]), "never the key");

    let (status, _, third) = create_key(&app, mid, &first).await;
    assert_eq!((status, third["error"]["code"].as_str()), (409, Some("too_many_keys")));
    assert_eq!(ids(&app.admin("GET", &keys_path, None).await).len(), 2, "nothing added");

    let revoke = format!("{keys_path}/{first_id}");
    assert_eq!(app.call("DELETE", &revoke, Some(&second_key), None).await.status, 204);
    let old = app.call("GET", &keys_path, Some(&first), None).await;
    assert_eq!((old.status, old.body["error"]["code"].as_str()), (401, Some("unauthorized")));
    let second_path = format!("{keys_path}/{}", id_of(&second));
    let last = app.call("DELETE", &second_path, Some(&second_key), None).await;
    assert_eq!((last.status, last.body["error"]["code"].as_str()), (409, Some("last_key")));
    let again = app.admin("DELETE", &revoke, None).await;
    assert_eq!((again.status, again.body["error"]["code"].as_str()), (404, Some("not_found")));
    assert_eq!(ids(&app.admin("GET", &keys_path, None).await), [id_of(&second).to_owned()]);
}

#[tokio::test]
async fn a_merchant_reaches_no_other_merchants_keys() {
    let app = spawn_app(Mode::Manual).await;
    let a = app.merchant(json!({"name": "A", "callback_url": "https://a.example/cb"})).await;
    let b = app.merchant(json!({"name": "B", "callback_url": "https://b.example/cb"})).await;
    let a_key = a["api_key"].as_str().expect("key");
    let b_path = format!("/v1/merchants/{}/keys", id_of(&b));
    let b_first = format!("{b_path}/{}", b["api_key_id"].as_str().expect("key id"));
    for (method, path) in [("GET", &b_path), ("POST", &b_path), ("DELETE", &b_first)] {
        let r = app.call(method, path, Some(a_key), None).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{method}"
        );
    }
    let audit = app.call("GET", "/v1/audit", Some(a_key), None).await;
    assert_eq!(audit.status, 403, "the audit log is the admin's");
    assert_eq!(ids(&app.admin("GET", &b_path, None).await).len(), 1, "b's keys untouched");
    let bogus = app.admin("DELETE", &format!("{b_path}/not-a-key"), None).await;
    assert_eq!(bogus.status, 404);
}

#[tokio::test]
async fn a_keys_use_is_shown_to_the_hour() {
    let app = spawn_app(Mode::Manual).await;
    let m = app.merchant(json!({"name": "Used", "callback_url": "https://u.example/cb"})).await;
    let (mid, key) = (id_of(&m).to_owned(), m["api_key"].as_str().expect("key").to_owned());
    let path = format!("/v1/merchants/{mid}/keys");
    let before = app.admin("GET", &path, None).await;
    assert_eq!(before.body["data"][0]["last_used_at"], Value::Null, "not used yet");
    app.advance(Duration::from_secs(90 * 60)); // 1_700_005_400_000 ms: 23:43:20 UTC
    assert_eq!(app.call("GET", "/v1/events", Some(&key), None).await.status, 200);
    let used = wait_for("the use to be recorded", Duration::from_secs(10), || async {
        let r = app.admin("GET", &path, None).await;
        r.body["data"][0]["last_used_at"].as_str().map(str::to_owned)
    })
    .await;
    assert_eq!(used, "2023-11-14T23:00:00.000Z", "the start of the hour, never finer");
}

#[tokio::test]
async fn every_admin_and_key_action_is_in_the_audit_log() {
    let app = spawn_app(Mode::Manual).await;
    let m = app.merchant(json!({"name": "Audited", "callback_url": "https://a.example/cb"})).await;
    let mid = id_of(&m).to_owned();
    let key = m["api_key"].as_str().expect("key").to_owned();
    for action in ["pause", "pause", "resume", "archive"] {
        let r = app.admin("POST", &format!("/v1/merchants/{mid}/{action}"), None).await;
        assert_eq!(r.status, 200, "{action}: {:?}", r.body);
    }
    let since = json!({"since": "2023-11-14T00:00:00Z"});
    assert_eq!(
        app.admin("POST", &format!("/v1/merchants/{mid}/recover"), Some(since)).await.status,
        200
    );
    let (status, _, made) = create_key(&app, &mid, &key).await;
    assert_eq!(status, 201);
    let revoke = format!("/v1/merchants/{mid}/keys/{}", id_of(&made));
    assert_eq!(app.admin("DELETE", &revoke, None).await.status, 204);
    let refused = app.admin("POST", &format!("/v1/merchants/{mid}/pause"), None).await;
    assert_eq!(refused.status, 409, "an archived merchant is not paused: not logged");

    let log = app.admin("GET", &format!("/v1/audit?merchant_id={mid}"), None).await;
    assert_eq!(log.status, 200, "{:?}", log.body);
    let seen: Vec<(String, String)> = log.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| {
            (e["action"].as_str().unwrap_or("?").into(), e["actor"].as_str().unwrap_or("?").into())
        })
        .collect();
    let want = [
        ("merchant.paused", "admin"),
        ("merchant.resumed", "admin"),
        ("merchant.archived", "admin"),
        ("merchant.recovered", "admin"),
        ("key.created", "merchant"),
        ("key.revoked", "admin"),
    ]
    .map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(seen, want, "a repeated pause changes nothing and is not logged");
    let data = &log.body["data"];
    assert_eq!(data[3]["detail"], json!({"since": "2023-11-14T00:00:00.000Z"}));
    assert_eq!(data[4]["detail"], json!({"key_id": id_of(&made)}));
    let next = log.body["next_after"].as_i64().expect("cursor");
    let rest = app.admin("GET", &format!("/v1/audit?after={next}"), None).await;
    assert_eq!(rest.body["data"], json!([]), "nothing after the last entry");
    let bad = app.admin("GET", "/v1/audit?merchant_id=nope", None).await;
    assert_eq!((bad.status, bad.body["error"]["code"].as_str()), (422, Some("invalid_field")));
}
