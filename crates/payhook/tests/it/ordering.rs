//! SPEC §1 guarantee 3: per operation, callbacks leave in `seq` order, and an older
//! undelivered event is superseded rather than sent after a newer one.

use crate::helpers::*;
use payhook_core::model::{Attempt, AttemptOutcome};
use payhook_store::{ClaimRequest, NextStep};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test]
async fn an_older_undelivered_event_is_superseded_by_a_newer_one() {
    let app = spawn_app(Mode::Manual).await;
    let rx = TestReceiver::start().await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": rx.url})).await;
    let op = app.operation(m["id"].as_str().expect("id"), "o-1", json!({})).await;
    let id = op["id"].as_str().expect("id");
    for s in ["pending", "requires_3ds", "success"] {
        assert_eq!(app.report(id, s).await.status, 202);
    }
    assert_eq!(app.dispatcher.run_once().await, 1, "only the newest is sent");
    let states: Vec<_> = app.deliveries(id).await.iter().map(|d| d["state"].clone()).collect();
    assert_eq!(states, [json!("superseded"), json!("superseded"), json!("delivered")]);
    let got = rx.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["data"]["status"], "success");
}

#[tokio::test]
async fn a_newer_event_waits_for_the_attempt_in_flight_and_the_final_status_lands() {
    let app = spawn_app(Mode::Manual).await;
    let rx = TestReceiver::start().await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": rx.url, "retry": {"interval": "1s", "max_attempts": 5}})).await;
    let op = app.operation(m["id"].as_str().expect("id"), "o-1", json!({})).await;
    let id = op["id"].as_str().expect("id");
    app.report(id, "pending").await;

    // Another node has the `pending` delivery in flight.
    let in_flight = HashMap::new();
    use payhook_core::clock::Clock;
    let now = app.clock.as_ref().expect("manual").now();
    let claimed = app
        .store
        .claim_due(&ClaimRequest {
            node: "other-node",
            now,
            lease: Duration::from_secs(30),
            limit: 10,
            in_flight: &in_flight,
            per_host_limit: 8,
        })
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    app.report(id, "success").await;
    assert_eq!(app.dispatcher.run_once().await, 0, "success may not overtake pending in flight");

    // The in-flight attempt fails: it is not retried, the newer event supersedes it.
    let attempt = Attempt {
        delivery_id: claimed[0].delivery.id.clone(),
        number: 1,
        started_at: now,
        duration_ms: 5,
        request: "POST x".into(),
        response_status: Some(500),
        response_body: None,
        outcome: AttemptOutcome::Retry,
        error_kind: None,
        error: None,
    };
    let change =
        app.store.record_attempt(&attempt, NextStep::RetryAt(now), now).await.expect("record");
    assert_eq!(change.state.as_str(), "superseded");
    assert_eq!(app.dispatcher.run_once().await, 1);
    let got = rx.received();
    assert_eq!(
        got.iter().map(|r| r.json()["data"]["status"].clone()).collect::<Vec<_>>(),
        [json!("success")]
    );
}

#[tokio::test]
async fn stale_deliveries_cannot_be_resent() {
    let app = spawn_app(Mode::Manual).await;
    let rx = TestReceiver::start().await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": rx.url})).await;
    let op = app.operation(m["id"].as_str().expect("id"), "o-1", json!({})).await;
    let id = op["id"].as_str().expect("id");
    app.report(id, "pending").await;
    app.dispatcher.run_once().await;
    app.report(id, "success").await;
    app.dispatcher.run_once().await;
    let list = app.deliveries(id).await;
    let old = list[0]["id"].as_str().expect("id");
    let r = app.admin("POST", &format!("/v1/deliveries/{old}/resend"), None).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (409, Some("superseded")));
    let newest = list[1]["id"].as_str().expect("id");
    let key = m["api_key"].as_str().expect("key");
    let r = app.call("POST", &format!("/v1/deliveries/{newest}/resend"), Some(key), None).await;
    assert_eq!(r.status, 202, "the owner may resend the newest");
    assert_eq!(app.dispatcher.run_once().await, 1);
    let got = rx.received();
    assert_eq!(got.len(), 3);
    assert_eq!(got[2].header("webhook-id"), newest, "a resend keeps the delivery id");
}
