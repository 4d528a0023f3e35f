//! A merchant's endpoint health through the API: the merchant's view, the list's health
//! filter and the per-merchant gauges of /metrics, moved on by real callbacks.

use crate::helpers::*;
use serde_json::{json, Value};
use std::time::Duration;

async fn health_of(app: &TestApp, mid: &str) -> Value {
    let r = app.admin("GET", &format!("/v1/merchants/{mid}"), None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["health"].clone()
}

/// Merchant ids of `GET /v1/merchants?health=…`.
async fn listed(app: &TestApp, health: &str) -> Vec<String> {
    let r = app.admin("GET", &format!("/v1/merchants?health={health}&limit=10"), None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let data = r.body["data"].as_array().expect("data");
    data.iter().map(|m| m["id"].as_str().expect("id").to_owned()).collect()
}

/// Runs the dispatcher until `rx` has seen `n` requests.
async fn attempts(app: &TestApp, rx: &TestReceiver, n: usize) {
    app.advance(Duration::from_secs(2));
    app.dispatcher.run_once().await;
    rx.wait_for(n, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn failures_show_in_the_merchants_health_until_a_success() {
    let app = spawn_app(Mode::Manual).await;
    let rx = TestReceiver::start().await;
    rx.script(&[(500, "down"), (503, "down"), (500, "down")]);
    let retry = json!({"interval": "1s", "max_attempts": 10});
    let m = app.merchant(json!({"name": "Flaky", "callback_url": rx.url, "retry": retry})).await;
    let mid = m["id"].as_str().expect("id").to_owned();
    let quiet = app.merchant(json!({"name": "Quiet", "callback_url": rx.url})).await;
    let quiet_id = quiet["id"].as_str().expect("id").to_owned();
    assert_eq!(health_of(&app, &mid).await, json!({"state": "unknown", "destinations": []}));

    let op = app.operation(&mid, "order-1", json!({})).await;
    assert_eq!(app.report(op["id"].as_str().expect("id"), "success").await.status, 202);
    for n in 1..=3 {
        attempts(&app, &rx, n).await;
    }
    let failing = wait_for("three failures recorded", Duration::from_secs(10), || async {
        let h = health_of(&app, &mid).await;
        (h["destinations"][0]["consecutive_failures"] == 3).then_some(h)
    })
    .await;
    let d = &failing["destinations"][0];
    assert_eq!(
        (failing["state"].as_str(), d["url"].as_str()),
        (Some("failing"), Some(rx.url.as_str()))
    );
    assert_eq!(d["failing_since"], "2023-11-14T22:13:22.000Z", "the first failure");
    assert_eq!(
        (d["success_rate_1h"].as_f64(), d["last_success_at"].clone()),
        (Some(0.0), Value::Null)
    );
    assert_eq!(listed(&app, "failing").await, vec![mid.clone()]);
    assert_eq!(listed(&app, "unknown").await, vec![quiet_id.clone()]);
    assert!(listed(&app, "healthy").await.is_empty());

    let metrics = app.http.get(format!("{}/metrics", app.base)).send().await.expect("scrape");
    let text = metrics.text().await.expect("text");
    let line = format!("payhook_merchant_consecutive_failures{{merchant=\"{mid}\"}} 3");
    assert!(text.contains(&line), "{line} in\n{text}");
    assert!(!text.contains(&rx.url), "no label per URL");

    attempts(&app, &rx, 4).await;
    let healthy = wait_for("the success recorded", Duration::from_secs(10), || async {
        let h = health_of(&app, &mid).await;
        (h["state"] == "healthy").then_some(h)
    })
    .await;
    let d = &healthy["destinations"][0];
    assert_eq!(
        (d["consecutive_failures"].as_u64(), d["failing_since"].clone()),
        (Some(0), Value::Null)
    );
    assert_eq!(d["success_rate_1h"].as_f64(), Some(0.25), "one of four");
    assert_eq!(listed(&app, "healthy").await, vec![mid.clone()]);
    let bad = app.admin("GET", "/v1/merchants?health=poorly", None).await;
    assert_eq!((bad.status, bad.body["error"]["code"].as_str()), (422, Some("invalid_field")));
}
