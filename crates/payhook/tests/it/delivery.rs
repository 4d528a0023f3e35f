//! Callbacks on the wire: Standard Webhooks signatures checked by the official library,
//! acknowledgement rules, the SSRF switch, timeouts, and per-destination isolation.

use crate::helpers::*;
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_status_report_arrives_signed_and_verifies_with_the_official_library() {
    let app = spawn_app(Mode::Live).await;
    let rx = TestReceiver::start().await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": format!("{}/hook", rx.url)})).await;
    let op = app
        .operation(m["id"].as_str().expect("id"), "order-42", json!({"data": {"rrn": "777"}}))
        .await;
    let id = op["id"].as_str().expect("id");
    assert_eq!(app.report(id, "success").await.status, 202);

    let got = rx.wait_for(1, WAIT).await;
    let cb = &got[0];
    assert_eq!((cb.method.as_str(), cb.uri.as_str()), ("POST", "/hook"));
    let wh = standardwebhooks::Webhook::new(m["signing_secret"].as_str().expect("secret"))
        .expect("secret parses");
    wh.verify(&cb.body, &cb.headers).expect("the official library accepts our signature");
    let body = cb.json();
    assert_eq!(body["type"], "operation.status_changed");
    assert_eq!(body["data"]["id"], id);
    assert_eq!(body["data"]["external_id"], "order-42");
    assert_eq!(body["data"]["status"], "success");
    assert_eq!(body["data"]["data"]["rrn"], "777");
    assert!(cb.header("user-agent").starts_with("payhook/"));

    let list = app.settled(id).await;
    assert_eq!(list[0]["state"], "delivered");
    assert_eq!(list[0]["id"].as_str(), Some(cb.header("webhook-id")));
    assert_eq!(list[0]["attempts"][0]["response_status"], 200);
}

#[tokio::test]
async fn retries_keep_the_delivery_id_and_rotation_signs_twice() {
    let app = spawn_app(Mode::Live).await;
    let rx = TestReceiver::start().await;
    rx.script(&[(500, "down"), (503, "still down")]);
    let m = app
        .merchant(json!({"name": "Shop", "callback_url": rx.url, "retry": {"interval": "100ms", "max_attempts": 5}}))
        .await;
    let mid = m["id"].as_str().expect("id");
    let old = m["signing_secret"].as_str().expect("secret").to_owned();
    let rotated = app.admin("POST", &format!("/v1/merchants/{mid}/rotate-secret"), None).await;
    assert_eq!(rotated.status, 200);
    let new = rotated.body["signing_secret"].as_str().expect("secret").to_owned();
    assert_ne!(old, new);
    let op = app.operation(mid, "o-1", json!({})).await;
    let id = op["id"].as_str().expect("id");
    app.report(id, "success").await;

    let got = rx.wait_for(3, WAIT).await;
    let ids: Vec<_> = got.iter().map(|r| r.header("webhook-id").to_owned()).collect();
    assert!(ids.iter().all(|i| i == &ids[0]), "same delivery id on every attempt: {ids:?}");
    for secret in [&old, &new] {
        let wh = standardwebhooks::Webhook::new(secret).expect("secret");
        wh.verify(&got[2].body, &got[2].headers).expect("both secrets verify during rotation");
    }
    let list = app.settled(id).await;
    assert_eq!(list[0]["state"], "delivered");
    let outcomes: Vec<_> = list[0]["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["response_status"].clone())
        .collect();
    assert_eq!(outcomes, [json!(500), json!(503), json!(200)]);
}

#[tokio::test]
async fn gone_disables_the_destination_until_the_operator_reenables_it() {
    let app = spawn_app(Mode::Live).await;
    let rx = TestReceiver::start().await;
    rx.script(&[(410, "gone")]);
    let m = app.merchant(json!({"name": "Shop", "callback_url": rx.url})).await;
    let mid = m["id"].as_str().expect("id");
    let first = app.operation(mid, "o-1", json!({})).await;
    app.report(first["id"].as_str().expect("id"), "success").await;
    let list = app.settled(first["id"].as_str().expect("id")).await;
    assert_eq!(list[0]["state"], "cancelled");

    let second = app.operation(mid, "o-2", json!({})).await;
    app.report(second["id"].as_str().expect("id"), "success").await;
    let list = app.deliveries(second["id"].as_str().expect("id")).await;
    assert_eq!(list[0]["state"], "cancelled", "a disabled destination gets nothing");
    assert_eq!(rx.received().len(), 1);

    let patch = app
        .admin(
            "PATCH",
            &format!("/v1/merchants/{mid}"),
            Some(json!({"reenable_destinations": true})),
        )
        .await;
    assert_eq!(patch.status, 200);
    let third = app.operation(mid, "o-3", json!({})).await;
    app.report(third["id"].as_str().expect("id"), "success").await;
    assert_eq!(app.settled(third["id"].as_str().expect("id")).await[0]["state"], "delivered");
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let app = spawn_app(Mode::Live).await;
    let rx = TestReceiver::start().await;
    let elsewhere = TestReceiver::start().await;
    let m = app
        .merchant(json!({"name": "Shop", "callback_url": rx.url, "retry": {"schedule": []}}))
        .await;
    rx.script(&[(302, "")]);
    let op = app.operation(m["id"].as_str().expect("id"), "o-1", json!({})).await;
    app.report(op["id"].as_str().expect("id"), "success").await;
    let list = app.settled(op["id"].as_str().expect("id")).await;
    assert_eq!(list[0]["state"], "exhausted");
    assert_eq!(list[0]["attempts"][0]["response_status"], 302);
    assert_eq!(list[0]["attempts"][0]["error_kind"], "http_status");
    assert!(elsewhere.received().is_empty());
}

#[tokio::test]
async fn private_targets_are_blocked_unless_allowed() {
    let app = spawn_app_with(Mode::Live, |c| c.allow_private_targets = false).await;
    let rx = TestReceiver::start().await;
    // A literal private address never gets in...
    let r = app
        .admin("POST", "/v1/merchants", Some(json!({"name": "Shop", "callback_url": rx.url})))
        .await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (422, Some("blocked_target")));
    // ...and names that resolve to one are refused when the dispatcher resolves them.
    let named = via_name(&rx, "loopback.test");
    let m = app.merchant(json!({"name": "Shop", "callback_url": named})).await;
    let mid = m["id"].as_str().expect("id");
    let merchants = app.operation(mid, "o-1", json!({})).await;
    let own = via_name(&rx, "api.loopback.test");
    let operations = app.operation(mid, "o-2", json!({"callback_url": own})).await;
    for op in [&merchants, &operations] {
        let id = op["id"].as_str().expect("id");
        app.report(id, "success").await;
        let list = app.settled(id).await;
        assert_eq!(list[0]["state"], "cancelled", "{}", list[0]);
        assert_eq!(list[0]["attempts"][0]["error_kind"], "blocked_target");
    }
    assert!(rx.received().is_empty(), "nothing reached the private address");
}

#[tokio::test]
async fn a_silent_endpoint_times_out_and_delays_no_other_merchant() {
    let app = spawn_app_with(Mode::Live, |c| {
        c.request_timeout = Duration::from_millis(800);
        c.per_host_limit = 2;
    })
    .await;
    // A server that accepts connections and never answers.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hole_url = format!("http://{}", black_hole.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = black_hole.accept().await {
            held.push(sock);
        }
    });
    let rx = TestReceiver::start().await;
    let slow = app
        .merchant(json!({"name": "Slow", "callback_url": hole_url, "retry": {"schedule": []}}))
        .await;
    let fast = app.merchant(json!({"name": "Fast", "callback_url": rx.url})).await;
    let mut slow_ops = Vec::new();
    for i in 0..6 {
        let op =
            app.operation(slow["id"].as_str().expect("id"), &format!("s-{i}"), json!({})).await;
        app.report(op["id"].as_str().expect("id"), "success").await;
        slow_ops.push(op);
    }
    let op = app.operation(fast["id"].as_str().expect("id"), "f-1", json!({})).await;
    app.report(op["id"].as_str().expect("id"), "success").await;
    rx.wait_for(1, WAIT).await;
    let fast_list = app.settled(op["id"].as_str().expect("id")).await;
    let fast_start = started_ms(&fast_list[0]["attempts"][0]);
    let mut spans = Vec::new();
    for op in &slow_ops {
        let list = app.settled(op["id"].as_str().expect("id")).await;
        let attempt = &list[0]["attempts"][0];
        assert_eq!(
            (list[0]["state"].as_str(), attempt["error_kind"].as_str()),
            (Some("exhausted"), Some("timeout"))
        );
        let start = started_ms(attempt);
        spans.push((start, start + attempt["duration_ms"].as_i64().expect("duration")));
    }
    let last_slow_start = spans.iter().map(|s| s.0).max().expect("six spans");
    assert!(fast_start < last_slow_start, "the fast merchant did not wait behind the slow one");
    for (start, _) in &spans {
        let overlapping = spans.iter().filter(|(s, e)| s <= start && start < e).count();
        assert!(overlapping <= 2, "per-host limit of 2 exceeded: {spans:?}");
    }
}

fn started_ms(attempt: &serde_json::Value) -> i64 {
    let text = attempt["started_at"].as_str().expect("started_at");
    payhook_core::Timestamp::parse_rfc3339(text).expect("RFC 3339").millis()
}

/// A receiver that holds each request for a while and remembers the most it held at once.
struct Gauge {
    now: std::sync::atomic::AtomicUsize,
    max: std::sync::atomic::AtomicUsize,
    done: std::sync::atomic::AtomicUsize,
}

async fn start_gauge(hold: Duration) -> (String, std::sync::Arc<Gauge>) {
    use std::sync::atomic::Ordering::SeqCst;
    let gauge = std::sync::Arc::new(Gauge { now: 0.into(), max: 0.into(), done: 0.into() });
    let g = gauge.clone();
    let app = axum::Router::new().fallback(move || {
        let g = g.clone();
        async move {
            let now = g.now.fetch_add(1, SeqCst) + 1;
            g.max.fetch_max(now, SeqCst);
            tokio::time::sleep(hold).await; // the merchant is slow: requests overlap
            g.now.fetch_sub(1, SeqCst);
            g.done.fetch_add(1, SeqCst);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/cb", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, gauge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_host_limit_holds_across_hand_offs_and_claims() {
    use std::sync::atomic::Ordering::SeqCst;
    let app = std::sync::Arc::new(spawn_app_with(Mode::Live, |c| c.per_host_limit = 3).await);
    let (url, gauge) = start_gauge(Duration::from_millis(40)).await;
    let m = app.merchant(json!({"name": "Slow", "callback_url": url})).await;
    let mid = m["id"].as_str().expect("id").to_owned();
    let mut ids = Vec::new();
    for i in 0..60 {
        let op = app.operation(&mid, &format!("limit-{i}"), json!({})).await;
        ids.push(op["id"].as_str().expect("id").to_owned());
    }
    // Half reported one by one and all at once, half in one batch: more than the host's 3 slots
    // and its line of 24 hold, so some hand-offs wait in line and the rest are left for claims,
    // which race with the hand-offs still coming in.
    let (singles, batch) = ids.split_at(30);
    let mut tasks = Vec::new();
    for id in singles {
        let (app, id) = (app.clone(), id.clone());
        tasks.push(tokio::spawn(async move { app.report(&id, "success").await.status }));
    }
    let items: Vec<_> =
        batch.iter().map(|id| json!({"operation_id": id, "status": "success"})).collect();
    let r = app.admin("POST", "/v1/operations/status:batch", Some(json!({"items": items}))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    for t in tasks {
        assert_eq!(t.await.expect("report task"), 202);
    }
    wait_for("all 60 callbacks", WAIT, || async { (gauge.done.load(SeqCst) >= 60).then_some(()) })
        .await;
    assert_eq!(gauge.done.load(SeqCst), 60, "each delivery sent once");
    let max = gauge.max.load(SeqCst);
    assert!(max <= 3, "per-host limit of 3 exceeded: {max} requests at once");
    assert!(max >= 2, "requests should overlap up to the limit (saw {max})");
}
