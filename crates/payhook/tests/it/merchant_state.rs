//! Pausing, resuming and archiving a merchant through the API, with real callbacks.

use crate::helpers::*;
use serde_json::{json, Value};
use std::time::Duration;

fn state_of(r: &Resp) -> &str {
    r.body["state"].as_str().unwrap_or("?")
}

/// 100 reports across 10 operations while the merchant is paused: nothing is attempted; on
/// resume exactly one callback per operation, its latest status.
#[tokio::test]
async fn a_paused_merchant_gets_each_operations_latest_status_once_on_resume() {
    let app = spawn_app(Mode::Manual).await;
    let rx = TestReceiver::start().await;
    let m = app.merchant(json!({"name": "Moving", "callback_url": rx.url})).await;
    let mid = m["id"].as_str().expect("id");
    let paused = app.admin("POST", &format!("/v1/merchants/{mid}/pause"), None).await;
    assert_eq!((paused.status, state_of(&paused)), (200, "paused"), "{:?}", paused.body);
    let mut ops = Vec::new();
    for n in 0..10 {
        let op = app.operation(mid, &format!("order-{n}"), json!({})).await;
        let id = op["id"].as_str().expect("id").to_owned();
        for i in 0..9 {
            let r = app
                .admin(
                    "POST",
                    &format!("/v1/operations/{id}/status"),
                    Some(json!({"status": "pending", "data": {"step": i}})),
                )
                .await;
            assert_eq!(r.status, 202, "{:?}", r.body);
        }
        assert_eq!(app.report(&id, "success").await.status, 202);
        ops.push(id);
    }
    app.advance(Duration::from_secs(3600));
    assert_eq!(app.dispatcher.run_once().await, 0, "nothing is claimed while paused");
    assert!(rx.received().is_empty());
    for id in &ops {
        let list = app.deliveries(id).await;
        assert!(
            list.iter().all(|d| d["attempts"].as_array().is_none_or(Vec::is_empty)),
            "{list:?}"
        );
    }

    let resumed = app.admin("POST", &format!("/v1/merchants/{mid}/resume"), None).await;
    assert_eq!((resumed.status, state_of(&resumed)), (200, "active"));
    let mut settled = Vec::new();
    for id in &ops {
        let list = wait_for("the latest status delivered", Duration::from_secs(20), || async {
            app.dispatcher.run_once().await;
            let list = app.deliveries(id).await;
            list.iter().all(|d| d["state"] != "pending").then_some(list)
        })
        .await;
        settled.push(list);
    }
    let got = rx.received();
    assert_eq!(got.len(), 10, "exactly one callback per operation");
    for (id, list) in ops.iter().zip(&settled) {
        let states: Vec<&str> = list.iter().filter_map(|d| d["state"].as_str()).collect();
        assert_eq!(states.iter().filter(|s| **s == "delivered").count(), 1, "{id}: {states:?}");
        assert_eq!(states.last(), Some(&"delivered"), "the latest status went: {states:?}");
        let sent: Vec<Value> =
            got.iter().map(|c| c.json()).filter(|b| b["data"]["id"] == id.as_str()).collect();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0]["data"]["status"], "success");
    }
}

/// Live: a report for a paused merchant is not handed to the dispatcher. Another merchant's
/// report made after it is delivered first (hand-off is immediate), and the paused one's
/// delivery is still pending with no attempt.
#[tokio::test]
async fn a_paused_merchants_new_reports_are_not_handed_off() {
    let app = spawn_app(Mode::Live).await;
    let rx = TestReceiver::start().await;
    let paused = app.merchant(json!({"name": "Paused", "callback_url": rx.url})).await;
    let other = app.merchant(json!({"name": "Other", "callback_url": rx.url})).await;
    let pid = paused["id"].as_str().expect("id");
    app.admin("POST", &format!("/v1/merchants/{pid}/pause"), None).await;
    let held = app.operation(pid, "held", json!({})).await;
    let held = held["id"].as_str().expect("id");
    assert_eq!(app.report(held, "success").await.status, 202);
    let free = app.operation(other["id"].as_str().expect("id"), "free", json!({})).await;
    let free = free["id"].as_str().expect("id");
    assert_eq!(app.report(free, "success").await.status, 202);
    app.settled(free).await;
    let list = app.deliveries(held).await;
    assert_eq!(list[0]["state"], "pending", "{list:?}");
    assert_eq!(rx.received().len(), 1, "only the other merchant's callback");
    app.admin("POST", &format!("/v1/merchants/{pid}/resume"), None).await;
    let list = app.settled(held).await;
    assert_eq!(list[0]["state"], "delivered", "{list:?}");
}

#[tokio::test]
async fn an_archived_merchant_takes_no_new_operation_and_stays_archived() {
    let app = spawn_app(Mode::Manual).await;
    let rx = TestReceiver::start().await;
    let m = app.merchant(json!({"name": "Closed", "callback_url": rx.url})).await;
    let mid = m["id"].as_str().expect("id");
    let before = app.operation(mid, "before", json!({})).await;
    let archived = app.admin("POST", &format!("/v1/merchants/{mid}/archive"), None).await;
    assert_eq!((archived.status, state_of(&archived)), (200, "archived"));
    let body = json!({"merchant_id": mid, "external_id": "after", "amount": 1, "currency": "UAH",
        "kind": "purchase"});
    let r = app.admin("POST", "/v1/operations", Some(body)).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (409, Some("merchant_archived")));
    let none = app
        .admin("GET", &format!("/v1/operations?merchant_id={mid}&external_id=after"), None)
        .await;
    assert_eq!(none.status, 404, "nothing was stored");
    for action in ["pause", "resume"] {
        let r = app.admin("POST", &format!("/v1/merchants/{mid}/{action}"), None).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (409, Some("merchant_archived")),
            "{action}"
        );
    }
    let again = app.admin("POST", &format!("/v1/merchants/{mid}/archive"), None).await;
    assert_eq!((again.status, state_of(&again)), (200, "archived"), "archiving twice is no error");
    // Its existing operation is still read, reported and delivered.
    let id = before["id"].as_str().expect("id");
    assert_eq!(app.report(id, "success").await.status, 202);
    app.dispatcher.run_once().await;
    assert_eq!(app.deliveries(id).await[0]["state"], "delivered");
    let read = app.admin("GET", &format!("/v1/merchants/{mid}"), None).await;
    assert_eq!(state_of(&read), "archived");

    let key = m["api_key"].as_str();
    for action in ["pause", "resume", "archive"] {
        let r = app.call("POST", &format!("/v1/merchants/{mid}/{action}"), key, None).await;
        assert_eq!(r.status, 403, "a merchant key may not {action}");
    }
    let r = app.admin("POST", "/v1/merchants/mer_unknown/pause", None).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (404, Some("not_found")));
}

/// A merchant's outage end to end: its server fails, every delivery is exhausted; it comes
/// back; one recovery call queues each operation's latest status, delivered exactly once.
#[tokio::test]
async fn after_an_outage_one_recovery_delivers_each_operations_latest_status_once() {
    let app = spawn_app(Mode::Manual).await;
    let rx = TestReceiver::start().await;
    rx.set_default(503, "down");
    let m = app
        .merchant(json!({"name": "Outage", "callback_url": rx.url,
        "retry": {"interval": "1s", "max_attempts": 2}}))
        .await;
    let mid = m["id"].as_str().expect("id");
    let mut ops = Vec::new();
    for n in 0..5 {
        let op = app.operation(mid, &format!("order-{n}"), json!({})).await;
        let id = op["id"].as_str().expect("id").to_owned();
        assert_eq!(app.report(&id, "pending").await.status, 202);
        assert_eq!(app.report(&id, "success").await.status, 202);
        ops.push(id);
    }
    for id in &ops {
        wait_for("the delivery exhausted", Duration::from_secs(20), || async {
            app.dispatcher.run_once().await;
            app.advance(Duration::from_secs(2));
            let list = app.deliveries(id).await;
            (list.last().is_some_and(|d| d["state"] == "exhausted")).then_some(())
        })
        .await;
    }
    rx.set_default(200, "ok");
    let before = rx.received().len();
    let path = format!("/v1/merchants/{mid}/recover");
    let since = json!({"since": "2023-11-14T00:00:00Z"});
    let r = app.admin("POST", &path, Some(since.clone())).await;
    assert_eq!((r.status, &r.body), (200, &json!({"queued": 5})));
    let again = app.admin("POST", &path, Some(since.clone())).await;
    assert_eq!(again.body, json!({"queued": 0}), "nothing is queued twice");
    for id in &ops {
        wait_for("the recovered delivery", Duration::from_secs(20), || async {
            app.dispatcher.run_once().await;
            let list = app.deliveries(id).await;
            (list.last().is_some_and(|d| d["state"] == "delivered")).then_some(())
        })
        .await;
    }
    let after: Vec<Value> = rx.received()[before..].iter().map(|c| c.json()).collect();
    assert_eq!(after.len(), 5, "one callback per operation");
    for id in &ops {
        let sent: Vec<&Value> = after.iter().filter(|b| b["data"]["id"] == id.as_str()).collect();
        assert_eq!(sent.len(), 1, "{id}");
        assert_eq!(sent[0]["data"]["status"], "success", "the latest status");
    }

    for (body, status, code) in [
        (json!({"since": "2030-01-01T00:00:00Z"}), 422, "invalid_time"),
        (json!({"since": "yesterday"}), 422, "invalid_time"),
        (json!({"since": "2023-11-14T00:00:00Z", "all": true}), 400, "malformed_request"),
    ] {
        let r = app.admin("POST", &path, Some(body.clone())).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (status, Some(code)), "{body}");
    }
    let r = app.admin("POST", "/v1/merchants/mer_unknown/recover", Some(since.clone())).await;
    assert_eq!(r.status, 404);
    let r = app.call("POST", &path, m["api_key"].as_str(), Some(since)).await;
    assert_eq!(r.status, 403, "a merchant key may not recover");
}
