//! The re-poll watchdog against a real status server on loopback, on a manual clock: polls on
//! schedule, one event per change, the ws2mpi 408 when the budget is spent, restarts, and
//! every kind of bad answer.

use crate::helpers::*;
use serde_json::{json, Value};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

/// A ws2mpi merchant whose callbacks go to `rx`, and an operation watched at `source`.
async fn watched(
    app: &TestApp,
    rx: &TestReceiver,
    source: &TestReceiver,
    schedule: Value,
) -> String {
    let m =
        app.merchant(json!({"name": "Shop", "dialect": "ws2mpi", "callback_url": rx.url})).await;
    let op = app
        .operation(
            m["id"].as_str().expect("id"),
            "order-77",
            json!({"status_source": {
                "url": format!("{}/ConfirmExt?order=77", source.url),
                "status_map": {"0": "pending", "5": "requires_3ds", "2": "success", "6": "failed"},
                "schedule": schedule,
            }}),
        )
        .await;
    op["id"].as_str().expect("id").to_owned()
}

async fn polls(app: &TestApp, op: &str) -> Value {
    let r = app.admin("GET", &format!("/v1/operations/{op}/polls"), None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
}

fn column(log: &Value, key: &str) -> Vec<Value> {
    log["data"].as_array().expect("polls").iter().map(|p| p[key].clone()).collect()
}

async fn step(app: &TestApp, by: Duration) -> usize {
    app.advance(by);
    app.watchdog.run_once().await
}

#[tokio::test]
async fn pending_pending_final_gives_exactly_one_event_and_one_callback() {
    let app = spawn_app(Mode::Manual).await;
    let (rx, source) = (TestReceiver::start().await, TestReceiver::start().await);
    source.script(&[(200, r#"{"orderStatus":0}"#), (200, r#"{"orderStatus":0}"#)]);
    source.set_default(200, r#"{"orderStatus":2,"orderNumber":"order-77"}"#);
    let op = watched(&app, &rx, &source, json!(["5s", "10s", "15s", "30s"])).await;
    assert_eq!(app.report(&op, "pending").await.status, 202);

    assert_eq!(step(&app, Duration::from_millis(4_999)).await, 0, "first poll after 5 s");
    assert_eq!(step(&app, Duration::from_millis(1)).await, 1);
    assert_eq!(step(&app, 9 * SEC).await, 0);
    assert_eq!(step(&app, SEC).await, 1);
    assert_eq!(step(&app, 15 * SEC).await, 1);
    assert_eq!(app.dispatcher.run_once().await, 1, "the callback follows the change");
    assert_eq!(step(&app, Duration::from_secs(3600)).await, 0, "a final status ends the watch");

    let log = polls(&app, &op).await;
    assert_eq!(column(&log, "outcome"), [json!("unchanged"), json!("unchanged"), json!("changed")]);
    assert_eq!(column(&log, "read"), [json!("0"), json!("0"), json!("2")]);
    assert_eq!(log["state"], "finished");
    assert_eq!(source.received()[0].uri, "/ConfirmExt?order=77");
    let feed = app
        .admin("GET", &format!("/v1/events?merchant_id={}", log_merchant(&app, &op).await), None)
        .await;
    let statuses: Vec<_> =
        feed.body["data"].as_array().expect("events").iter().map(|e| e["status"].clone()).collect();
    assert_eq!(statuses, [json!("created"), json!("pending"), json!("success")]);
    let got = rx.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].json(),
        json!({"orderNumber": "order-77", "respStatus": 200, "orderStatus": 2, "orderId": op})
    );
}

async fn log_merchant(app: &TestApp, op: &str) -> String {
    let r = app.admin("GET", &format!("/v1/operations/{op}"), None).await;
    r.body["merchant_id"].as_str().expect("merchant").to_owned()
}

#[tokio::test]
async fn a_spent_budget_sends_the_ws2mpi_408() {
    let app = spawn_app(Mode::Manual).await;
    let (rx, source) = (TestReceiver::start().await, TestReceiver::start().await);
    rx.set_default(200, r#"{"orderNumber":"order-77","applicationStatus":200}"#);
    source.set_default(200, r#"{"orderStatus":0}"#);
    let op = watched(&app, &rx, &source, json!(["1s", "2s"])).await;
    assert_eq!(step(&app, SEC).await, 1);
    assert_eq!(step(&app, 2 * SEC).await, 1);
    assert_eq!(step(&app, Duration::from_secs(600)).await, 0, "budget of two polls spent");
    let log = polls(&app, &op).await;
    assert_eq!((log["state"].as_str(), log["polls_made"].as_u64()), (Some("exhausted"), Some(2)));

    assert_eq!(app.dispatcher.run_once().await, 1);
    let got = rx.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json(), json!({"orderNumber": "order-77", "respStatus": 408, "orderId": op}));
    let d = &app.deliveries(&op).await[0];
    assert_eq!(
        (d["kind"].as_str(), d["state"].as_str()),
        (Some("poll_timeout"), Some("delivered"))
    );
}

#[tokio::test]
async fn a_watch_resumes_after_a_restart_without_losing_or_doubling_polls() {
    let app = spawn_app(Mode::Manual).await;
    let (rx, source) = (TestReceiver::start().await, TestReceiver::start().await);
    source.set_default(200, r#"{"orderStatus":5}"#);
    let op = watched(&app, &rx, &source, json!(["5s", "10s", "15s"])).await;
    assert_eq!(step(&app, 5 * SEC).await, 1);

    let app = app.restart(|_| {}).await;
    assert_eq!(step(&app, 9 * SEC).await, 0, "the schedule survived: not due yet");
    source.set_default(200, r#"{"orderStatus":6}"#);
    assert_eq!(step(&app, SEC).await, 1);
    let log = polls(&app, &op).await;
    assert_eq!(column(&log, "number"), [json!(1), json!(2)]);
    assert_eq!(column(&log, "mapped_status"), [json!("requires_3ds"), json!("failed")]);
    assert_eq!(log["state"], "finished");
    assert_eq!(source.received().len(), 2);
}

#[tokio::test]
async fn bad_answers_are_logged_count_against_the_budget_and_never_stop_the_watch() {
    let app =
        spawn_app_with(Mode::Manual, |c| c.request_timeout = Duration::from_millis(300)).await;
    let (rx, source) = (TestReceiver::start().await, TestReceiver::start().await);
    source.script(&[
        (503, "busy"),
        (200, "<html>"),
        (200, r#"{"other":1}"#),
        (200, r#"{"orderStatus":9}"#),
    ]);
    source.script_answer(Answer {
        status: 200,
        body: "{}".into(),
        delay: Duration::from_secs(3),
        ..Answer::default()
    });
    source.set_default(200, r#"{"orderStatus":"2"}"#);
    let op = watched(&app, &rx, &source, json!(["1s", "1s", "1s", "1s", "1s", "1s", "1s"])).await;
    for _ in 0..6 {
        assert_eq!(step(&app, SEC).await, 1);
    }
    let log = polls(&app, &op).await;
    assert_eq!(
        column(&log, "error_kind"),
        [
            json!("http_status"),
            json!("malformed"),
            json!("missing_field"),
            json!("unmapped"),
            json!("timeout"),
            Value::Null
        ]
    );
    assert_eq!(column(&log, "read")[3], json!("9"), "the unmapped value is logged");
    assert_eq!(column(&log, "outcome")[5], json!("changed"));
    assert_eq!(log["state"], "finished");
    let op_now = app.admin("GET", &format!("/v1/operations/{op}"), None).await;
    assert_eq!(op_now.body["status"], "success");
}

#[tokio::test]
async fn a_final_status_from_the_api_stops_the_watch() {
    let app = spawn_app(Mode::Manual).await;
    let (rx, source) = (TestReceiver::start().await, TestReceiver::start().await);
    source.set_default(200, r#"{"orderStatus":0}"#);
    let op = watched(&app, &rx, &source, json!(["1s", "1s", "1s"])).await;
    assert_eq!(step(&app, SEC).await, 1);
    assert_eq!(app.report(&op, "failed").await.status, 202);
    assert_eq!(step(&app, Duration::from_secs(60)).await, 0);
    assert_eq!(polls(&app, &op).await["state"], "finished");
    assert_eq!(source.received().len(), 1);
}

#[tokio::test]
async fn status_sources_pass_the_ssrf_guard_too() {
    let app = spawn_app_with(Mode::Manual, |c| c.allow_private_targets = false).await;
    let source = TestReceiver::start().await;
    // A name that resolves to loopback passes registration and is refused at the poll.
    let m = app.merchant(json!({"name": "Shop", "callback_url": "https://shop.example/cb"})).await;
    let url = format!("{}/ConfirmExt?order=77", via_name(&source, "loopback.test"));
    let op = app
        .operation(
            m["id"].as_str().expect("id"),
            "order-77",
            json!({"status_source": {"url": url, "schedule": ["1s"]}}),
        )
        .await;
    let op = op["id"].as_str().expect("id").to_owned();
    assert_eq!(step(&app, SEC).await, 1);
    let log = polls(&app, &op).await;
    assert_eq!(column(&log, "error_kind"), [json!("blocked_target")]);
    assert!(source.received().is_empty());
}

#[tokio::test]
async fn malformed_status_sources_are_refused_at_registration() {
    let app = spawn_app(Mode::Manual).await;
    let m = app.merchant(json!({"name": "Shop", "callback_url": "https://shop.example/cb"})).await;
    let body = json!({"merchant_id": m["id"], "external_id": "o-1", "amount": 1, "currency": "UAH",
        "kind": "purchase", "status_source": {"url": "https://p.example/", "schedule": []}});
    let r = app.admin("POST", "/v1/operations", Some(body)).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (422, Some("invalid_status_source")));
}
